#!/usr/bin/env python3
"""Side-by-side benchmark of running containers: kapsel (kapseld + containerd-shim-kapsel-v2 +
kapsel-runtime) against containerd 1.6 (`ctr`, runc shim + runc), dockerd 20.10 and podman 4.3
(crun), in one run.

Usage (as root, after scripts/build-release.sh):
    bench/containers.py [--rounds N] [--ps N] [--running N] [--only NAMES] [--json FILE]

Each engine gets its own daemon with a fresh root in one temporary directory and the busybox
image of scripts/make-fixtures.sh, then:

  run      wall time of `X run --rm busybox /bin/true` (docker and podman: `--network none`;
           kapsel's default network is none), median and p10/p90 of --rounds, rounds
           interleaved across engines so background load hits all alike
  ps       wall time of `X ps` with --ps containers running (kapsel against docker)
  rss      the daemon's RSS with --running containers running (`sleep`), against containerd's
           and dockerd's (dockerd alone and with the containerd it manages); the shims' total
           RSS and PSS beside it

Ratios are kapsel / peer. Standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/shim.py (beside this file): the process and cgroup helpers both benchmarks use.
from shim import (
    pids_matching,
    remove_namespace_cgroups,
    rss_pss_kib,
    total_rss_pss_kib,
    write_containerd_config,
)

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"  # docker.io's 20.10 CLI; /usr/local/bin/docker is another one
PODMAN_ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


def note(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, timeout=120, **kw):
    r = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {r.returncode}: {r.stderr.strip()}")
    return r






def threads(pid):
    """The Threads line of /proc/PID/status (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def wait_for(pred, what, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {limit} s")


class Engine:
    """A daemon and the CLI that drives it."""

    name = "?"
    shim_marker = None  # a string in the command line of this engine's shims

    def __init__(self, top):
        self.dir = Path(tempfile.mkdtemp(prefix=self.name[:3] + ".", dir=top))
        self.proc = None
        self.log = open(self.dir / "log", "wb")

    def spawn(self, cmd, **kw):
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
            **kw,
        )

    def cli(self):
        raise NotImplementedError

    def run_args(self):
        return []

    def run_true(self, i):
        return self.cli() + ["run", "--rm", *self.run_args(), self.image, "/bin/true"]

    def start_detached(self, name):
        run(self.cli() + ["run", "-d", "--name", name, *self.run_args(), self.image, "sleep", "3600"])

    def ps(self):
        return self.cli() + ["ps"]

    def remove(self, name):
        run(self.cli() + ["rm", "-f", name], check=False)

    def daemon_rss(self):
        """(the daemon's RSS, RSS with the helper daemons it manages) in KiB."""
        own = rss_pss_kib(self.proc.pid)[0]
        return own, own

    def shims_rss_pss(self):
        if not self.shim_marker:
            return 0, 0, 0
        pids = pids_matching(lambda c: self.shim_marker in c and str(self.dir) in c)
        pids = pids or pids_matching(lambda c: self.shim_marker in c)
        rss, pss = total_rss_pss_kib(pids)
        return len(pids), rss, pss

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids_matching(lambda c: str(self.dir) in c):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = line.split(" ")[4]
            if point.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class Kapsel(Engine):
    name = "kapsel"
    shim_marker = "containerd-shim-kapsel-v2"
    image = "busybox:latest"

    def __init__(self, top, bindir, archive):
        super().__init__(top)
        self.bindir = bindir
        self.sock = self.dir / "sock"
        self.spawn(
            [
                str(bindir / "kapseld"),
                "--root",
                str(self.dir / "root"),
                "--state",
                str(self.dir / "state"),
                "--address",
                str(self.sock),
            ]
        )
        wait_for(
            lambda: self.sock.exists() and run(self.cli() + ["version"], check=False).returncode == 0,
            "kapseld",
        )
        run(self.cli() + ["load", "-q", "-i", str(archive)])

    def cli(self):
        return [str(self.bindir / "kapsel"), "-H", str(self.sock)]

    def stop(self):
        # Containers and their shims outlive kapseld by design: remove them while it runs.
        ids = run(self.cli() + ["ps", "-aq"], check=False).stdout.split()
        if ids:
            run(self.cli() + ["rm", "-f", *ids], check=False, timeout=300)
        super().stop()


class Ctr(Engine):
    name = "ctr"
    shim_marker = "containerd-shim-runc-v2"
    image = "docker.io/library/busybox:latest"

    def __init__(self, top, archive):
        super().__init__(top)
        self.sock = self.dir / "sock"
        config = write_containerd_config(self.dir, self.sock)
        self.spawn(["containerd", "--config", str(config)])
        wait_for(
            lambda: self.sock.exists() and run(self.cli() + ["version"], check=False).returncode == 0,
            "containerd",
        )
        run(self.cli() + ["image", "import", str(archive)])
        self.n = 0

    ns = f"bench-ctr-{os.getpid()}"

    def cli(self):
        return ["ctr", "-a", str(self.sock), "-n", self.ns]

    def run_true(self, i):
        self.n += 1
        return self.cli() + [
            "run",
            "--rm",
            "--runc-root",
            str(self.dir / "runc"),
            self.image,
            f"bench-{os.getpid()}-{self.n}",
            "/bin/true",
        ]

    def start_detached(self, name):
        run(self.cli() + ["run", "-d", "--runc-root", str(self.dir / "runc"), self.image, name, "sleep", "3600"])

    def remove(self, name):
        run(self.cli() + ["task", "kill", "-s", "KILL", name], check=False)
        for _ in range(100):
            if run(self.cli() + ["task", "delete", name], check=False).returncode == 0:
                break
            time.sleep(0.05)
        run(self.cli() + ["container", "rm", name], check=False)

    def stop(self):
        # The runc shims and their containers outlive containerd: kill what runs in the
        # namespace's cgroups first, then the daemon.
        procs = Path("/sys/fs/cgroup/pids") / self.ns
        if procs.is_dir():
            for f in procs.rglob("cgroup.procs"):
                for pid in f.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        super().stop()
        remove_namespace_cgroups(self.ns)

    def shims_rss_pss(self):
        pids = pids_matching(lambda c: self.shim_marker in c and f"-namespace {self.ns} " in c)
        rss, pss = total_rss_pss_kib(pids)
        return len(pids), rss, pss


class Docker(Engine):
    name = "docker"
    shim_marker = "containerd-shim-runc-v2"
    image = "busybox:latest"

    def __init__(self, top, archive):
        super().__init__(top)
        self.sock = self.dir / "sock"
        d = self.dir
        (d / "daemon.json").write_text(
            json.dumps(
                {
                    "data-root": f"{d}/data",
                    "exec-root": f"{d}/exec",
                    "pidfile": f"{d}/pid",
                    "hosts": [f"unix://{d}/sock"],
                    "storage-driver": "overlay2",
                    "iptables": False,
                    "ip-forward": False,
                    "ip-masq": False,
                    "bridge": "none",
                }
            )
        )
        self.spawn(["dockerd", "--config-file", str(d / "daemon.json")])
        wait_for(
            lambda: self.sock.exists() and run(self.cli() + ["info"], check=False).returncode == 0,
            "dockerd",
        )
        run(self.cli() + ["load", "-q", "-i", str(archive)])

    def cli(self):
        return [DOCKER, "-H", f"unix://{self.sock}"]

    def run_args(self):
        return ["--network", "none"]

    def daemon_rss(self):
        own = rss_pss_kib(self.proc.pid)[0]
        kids = sum(rss_pss_kib(c)[0] for c in children(self.proc.pid))
        return own, own + kids


class Podman(Engine):
    name = "podman"
    shim_marker = "conmon"
    image = "docker.io/library/busybox:latest"

    def __init__(self, top, archive):
        super().__init__(top)
        run(self.cli() + ["load", "-q", "-i", str(archive)])

    def cli(self):
        d = self.dir
        return [
            "podman",
            "--root",
            f"{d}/root",
            "--runroot",
            f"{d}/runroot",
            "--tmpdir",
            f"{d}/tmp",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--network-config-dir",
            f"{d}/cni",
        ]

    def run_args(self):
        return ["--network", "none", *PODMAN_ULIMITS]

    def daemon_rss(self):
        return 0, 0  # no daemon

    def stop(self):
        run(self.cli() + ["rm", "-af", "-t", "0"], check=False)
        super().stop()


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    ms = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--ps", type=int, default=100, help="containers running for the ps measure")
    ap.add_argument("--running", type=int, default=50, help="containers running for the rss measure")
    ap.add_argument("--only", default="kapsel,ctr,docker,podman")
    ap.add_argument("--bindir", default=str(REPO / "target/release"))
    ap.add_argument("--fixtures", default=str(REPO / ".fixtures"))
    ap.add_argument("--json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/containers.py: run as root")
    bindir = Path(a.bindir)
    fixtures = Path(a.fixtures)
    docker_archive = next(fixtures.glob("*docker*.tar"), None)
    oci_archive = next((p for p in fixtures.glob("*oci*.tar")), None)
    if not docker_archive or not oci_archive:
        sys.exit(f"bench/containers.py: no docker/OCI busybox archives in {fixtures} (scripts/make-fixtures.sh)")
    for b in ["kapseld", "kapsel", "containerd-shim-kapsel-v2", "kapsel-runtime"]:
        if not (bindir / b).exists():
            sys.exit(f"bench/containers.py: {bindir / b} is missing: run scripts/build-release.sh")
    only = a.only.split(",")
    top = Path(tempfile.mkdtemp(prefix="kbc.", dir="/tmp"))  # short: socket paths < 108 bytes
    engines = {}
    results = {"run_ms": {}, "ps_ms": {}, "rss_kib": {}}
    try:
        makers = {
            "kapsel": lambda: Kapsel(top, bindir, docker_archive),
            "ctr": lambda: Ctr(top, oci_archive),
            "docker": lambda: Docker(top, docker_archive),
            "podman": lambda: Podman(top, oci_archive),
        }
        for name in only:
            if name == "podman" and not shutil.which("podman"):
                note("podman is not installed: skipped")
                continue
            note(f"starting {name}")
            engines[name] = makers[name]()
        # Warm-up: one run each (page cache, first-time setup).
        for e in engines.values():
            timed(e.run_true(0))
        times = {n: [] for n in engines}
        for i in range(a.rounds):
            for n, e in engines.items():
                times[n].append(timed(e.run_true(i + 1)))
        for n, t in times.items():
            results["run_ms"][n] = {
                "median": statistics.median(t),
                "p10": pct(t, 0.1),
                "p90": pct(t, 0.9),
            }
        # ps with many running, then daemon memory with --running of them.
        for n in [x for x in ("kapsel", "docker") if x in engines]:
            e = engines[n]
            names = [f"bench-ps-{i}" for i in range(a.ps)]
            note(f"{n}: starting {a.ps} containers")
            for cname in names:
                e.start_detached(cname)
            t = [timed(e.ps()) for _ in range(10)]
            results["ps_ms"][n] = {"containers": a.ps, "median": statistics.median(t)}
            for cname in names[a.running:]:
                e.remove(cname)
        for n in [x for x in ("ctr",) if x in engines]:
            e = engines[n]
            note(f"{n}: starting {a.running} containers")
            for i in range(a.running):
                e.start_detached(f"bench-rss-{i}")
        time.sleep(3)
        for n, e in engines.items():
            if n == "podman":
                continue
            own, total = e.daemon_rss()
            count, srss, spss = e.shims_rss_pss()
            results["rss_kib"][n] = {
                "daemon": own,
                "daemon_threads": threads(e.proc.pid),
                "daemon_with_helpers": total,
                "shims": count,
                "shims_rss": srss,
                "shims_pss": spss,
            }
    finally:
        for e in engines.values():
            try:
                e.stop()
            except Exception as ex:  # cleanup goes on whatever happened
                note(f"cleanup {e.name}: {ex}")
        shutil.rmtree(top, ignore_errors=True)

    k = results["run_ms"].get("kapsel", {}).get("median")
    print(f"run --rm busybox /bin/true ({a.rounds} rounds, interleaved):")
    for n, r in results["run_ms"].items():
        ratio = f"  kapsel/{n} {k / r['median']:.2f}x" if k and n != "kapsel" else ""
        print(f"  {n:8} median {r['median']:7.1f} ms  p10 {r['p10']:7.1f}  p90 {r['p90']:7.1f}{ratio}")
    if results["ps_ms"]:
        kp = results["ps_ms"].get("kapsel", {}).get("median")
        print("ps with running containers:")
        for n, r in results["ps_ms"].items():
            ratio = f"  kapsel/{n} {kp / r['median']:.2f}x" if kp and n != "kapsel" else ""
            print(f"  {n:8} {r['containers']} containers: {r['median']:7.1f} ms{ratio}")
    kr = results["rss_kib"].get("kapsel", {}).get("daemon")
    print(f"memory with {a.running} containers running (KiB):")
    for n, r in results["rss_kib"].items():
        ratio = f"  kapsel/{n} {kr / r['daemon_with_helpers']:.2f}x" if kr and n != "kapsel" else ""
        print(
            f"  {n:8} daemon {r['daemon']:7} ({r['daemon_threads']} threads)  with helpers {r['daemon_with_helpers']:7}  "
            f"{r['shims']} shims RSS {r['shims_rss']:8} PSS {r['shims_pss']:8}{ratio}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
