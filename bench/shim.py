#!/usr/bin/env python3
"""Side-by-side benchmark of containerd shims: containerd-shim-kapsel-v2 against
containerd-shim-runc-v2, through one isolated containerd 1.6 in one run.

Usage (as root):
    bench/shim.py [--rounds N] [--many N] [--idle-wait S] [--json FILE]
                  [--kapsel-shim PATH] [--fixtures DIR]

Starts its own containerd (temporary root, state and socket, its own namespace, CRI
disabled), imports the busybox OCI archive of scripts/make-fixtures.sh, and measures:

  idle   RSS and PSS (/proc/PID/smaps_rollup) of one shim serving a running `sleep`
         container, once it has been idle for --idle-wait seconds
  many   --many containers started with `ctr run -d`; the total RSS and PSS of their shims
         (PSS is the fair total: shared pages are divided among the processes sharing them)
  run    wall time of `ctr run --rm busybox /bin/true`, median and p10/p90 of --rounds,
         rounds interleaved across configurations so background load hits all alike

Configurations: `kapsel` (our shim, kapsel-runtime beside it), `runc` (containerd's runc
shim with /usr/sbin/runc) and, for `run` only, `runcshim-kapselrt` (runc's shim
driving kapsel-runtime), which separates the shim's share of the time from the runtime's.
Ratios are kapsel / runc. Release builds are expected:
    cargo build --release -p containerd-shim-kapsel-v2 -p kapsel-runtime
Standard library only.
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

REPO = Path(__file__).resolve().parent.parent
IMAGE = "docker.io/library/busybox:latest"
RUNC_SHIM = "containerd-shim-runc-v2"
KAPSEL_SHIM = "containerd-shim-kapsel-v2"
KAPSEL_STATE = Path("/run/kapsel/shim-runtime")


def note(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


class Containerd:
    """containerd 1.6 with everything in a temporary directory."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="kapsel-bench-shim-"))
        self.sock = self.dir / "containerd.sock"
        self.ns = f"bench-shim-{os.getpid()}"
        config = write_containerd_config(self.dir, self.sock)
        self.log = open(self.dir / "containerd.log", "wb")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sock.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("containerd did not come up within 30 s")

    def ctr(self, *args, check=True, timeout=120):
        cmd = ["ctr", "-a", str(self.sock), "-n", self.ns, *args]
        r = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        return r

    @property
    def runc_root(self):
        return self.dir / "runc-root"

    def remove_all(self):
        r = self.ctr("container", "ls", "-q", check=False)
        ids = [l.strip() for l in r.stdout.splitlines() if l.strip()]
        for cid in ids:
            self.ctr("task", "kill", "-s", "KILL", cid, check=False)
        for cid in ids:
            for _ in range(100):
                st = self.ctr("task", "ls", check=False).stdout
                if not any(l.split()[:1] == [cid] and "RUNNING" in l for l in st.splitlines()):
                    break
                time.sleep(0.05)
            self.ctr("task", "rm", "-f", cid, check=False)
            self.ctr("container", "rm", cid, check=False)

    def stop(self):
        try:
            self.remove_all()
        except Exception as e:  # cleanup goes on whatever happened
            note(f"cleanup: {e}")
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in pids_matching(lambda c: str(self.sock) in c):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = line.split(" ")[4]
            if point.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", point], capture_output=True)
        remove_namespace_cgroups(self.ns)
        state = KAPSEL_STATE / self.ns
        if state.is_dir():
            shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def remove_namespace_cgroups(ns):
    """containerd puts its containers' cgroups at /<namespace>/<id> in every hierarchy:
    remove what is left of them (empty directories only)."""
    for h in Path("/sys/fs/cgroup").iterdir():
        top = h / ns
        if top.is_dir():
            for d in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
                if d.is_dir():
                    try:
                        d.rmdir()
                    except OSError:
                        pass
            try:
                top.rmdir()
            except OSError:
                pass


def pids_matching(pred):
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pred(cmd.strip()) and int(entry.name) != os.getpid():
            out.append(int(entry.name))
    return out


def shim_pid(c, binary, cid):
    """The shim serving container `cid`."""
    want = f"-id {cid}"
    pids = pids_matching(
        lambda cmd: binary in cmd
        and f"-namespace {c.ns} " in cmd
        and (cmd.endswith(want) or f"{want} " in cmd)
    )
    if len(pids) != 1:
        raise RuntimeError(f"expected one {binary} for {cid}, found {pids}")
    return pids[0]


def rss_pss_kib(pid):
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def total_rss_pss_kib(pids):
    """RSS and PSS of `pids` added up (KiB)."""
    rss = pss = 0
    for p in pids:
        r, s = rss_pss_kib(p)
        rss += r
        pss += s
    return rss, pss


def write_containerd_config(top, sock):
    """A containerd 1.6 config keeping everything under `top`, serving on `sock`."""
    config = top / "config.toml"
    config.write_text(
        f"""version = 2
root = "{top}/root"
state = "{top}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{top}/opt"
"""
    )
    return config


def configs(c, kapsel_shim, kapsel_runtime):
    return {
        "kapsel": (KAPSEL_SHIM, ["--runtime", str(kapsel_shim)]),
        "runc": (
            RUNC_SHIM,
            ["--runtime", "io.containerd.runc.v2", "--runc-root", str(c.runc_root)],
        ),
        "runcshim-kapselrt": (
            RUNC_SHIM,
            [
                "--runtime",
                "io.containerd.runc.v2",
                "--runc-root",
                str(c.runc_root),
                "--runc-binary",
                str(kapsel_runtime),
            ],
        ),
    }


def measure_memory(c, name, binary, flags, many, idle_wait):
    ids = [f"{name}-{i}" for i in range(many)]
    for cid in ids:
        c.ctr("run", "-d", *flags, IMAGE, cid, "sleep", "100000")
    time.sleep(idle_wait)
    per = [rss_pss_kib(shim_pid(c, binary, cid)) for cid in ids]
    c.remove_all()
    return {
        "idle_rss_kib": per[0][0],
        "idle_pss_kib": per[0][1],
        "many": many,
        "many_rss_kib": sum(r for r, _ in per),
        "many_pss_kib": sum(p for _, p in per),
    }


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--many", type=int, default=50)
    ap.add_argument("--idle-wait", type=float, default=8.0,
                    help="seconds a shim sits idle before its memory is read")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--kapsel-shim", default=str(REPO / "target/release" / KAPSEL_SHIM))
    ap.add_argument("--fixtures", default=os.environ.get("KAPSEL_FIXTURES", str(REPO / ".fixtures")))
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("bench/shim.py must run as root (it starts containerd and containers)")
    kapsel_shim = Path(args.kapsel_shim)
    kapsel_runtime = kapsel_shim.parent / "kapsel-runtime"
    for p in (kapsel_shim, kapsel_runtime):
        if not os.access(p, os.X_OK):
            sys.exit(f"{p} not built: cargo build --release -p containerd-shim-kapsel-v2 -p kapsel-runtime")
    for prog in ("containerd", "ctr", RUNC_SHIM, "runc"):
        if shutil.which(prog) is None:
            sys.exit(f"{prog} not found: apt-get install containerd runc")
    archive = Path(args.fixtures) / "busybox-oci.tar"
    if not archive.exists():
        sys.exit(f"{archive} missing: run scripts/make-fixtures.sh")

    c = Containerd()
    results = {"memory": {}, "run": {}}
    try:
        c.ctr("image", "import", str(archive), timeout=300)
        cfg = configs(c, kapsel_shim, kapsel_runtime)
        for name in ("kapsel", "runc"):
            binary, flags = cfg[name]
            note(f"memory: {name}, {args.many} containers")
            results["memory"][name] = measure_memory(c, name, binary, flags, args.many, args.idle_wait)
        times = {name: [] for name in cfg}
        for name, (_, flags) in cfg.items():  # warm-up: page cache, first-run costs
            c.ctr("run", "--rm", *flags, IMAGE, f"warm-{name}", "/bin/true")
        for i in range(args.rounds):
            for name, (_, flags) in cfg.items():
                t0 = time.perf_counter()
                c.ctr("run", "--rm", *flags, IMAGE, f"r{i}-{name}", "/bin/true")
                times[name].append((time.perf_counter() - t0) * 1000)
        for name, ts in times.items():
            results["run"][name] = {
                "median_ms": statistics.median(ts),
                "p10_ms": pct(ts, 0.1),
                "p90_ms": pct(ts, 0.9),
                "rounds": len(ts),
            }
    finally:
        c.stop()

    mem = results["memory"]
    k, r = mem["kapsel"], mem["runc"]
    print(f"{'':28}{'kapsel':>12}{'runc':>12}{'ratio':>8}")
    for key, label in [
        ("idle_rss_kib", "idle shim RSS (KiB)"),
        ("idle_pss_kib", "idle shim PSS (KiB)"),
        ("many_rss_kib", f"{k['many']} shims RSS (KiB)"),
        ("many_pss_kib", f"{k['many']} shims PSS (KiB)"),
    ]:
        print(f"{label:28}{k[key]:>12}{r[key]:>12}{k[key] / r[key]:>8.2f}")
    run = results["run"]
    print()
    print(f"ctr run --rm /bin/true, {args.rounds} rounds: median (p10-p90) ms")
    for name, v in run.items():
        ratio = v["median_ms"] / run["runc"]["median_ms"]
        print(f"  {name:28}{v['median_ms']:8.1f} ({v['p10_ms']:.1f}-{v['p90_ms']:.1f})  x{ratio:.2f} of runc")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
