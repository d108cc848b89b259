#!/usr/bin/env python3
"""Side-by-side benchmark of runc-compatible OCI runtimes on one busybox bundle.

Usage (as root):
    bench/runtime.py [--runtime NAME=PATH ...] [--rounds N] [--json FILE] [FIXTURES]

Every runtime runs the same bundle: the busybox rootfs from
scripts/make-fixtures.sh and a config.json written by `runc spec` (so the
config is not one our own runtime chose), with process.args ["/bin/true"] and
terminal false. Each runtime gets its own --root in a temporary directory and
its own container ids. Measured per runtime:

  cycle      create + start + wait for the init to exit + delete, as a shim does
  run        foreground `run` of /bin/true
  parallel   N foreground runs started at once, total wall time
  list       `list` (and `state`) while 50 created-not-started containers exist
  RSS        peak RSS of each command kind, in a separate pass through GNU
             time (%M): a child of this process would report Python's own RSS
             as its ru_maxrss, since exec records the pre-exec mm's high-water mark
  size       the binary's size on disk

Like a shim, this process is a child subreaper: container init processes are
re-parented to it and reaped by it (pid 1 on some machines never reaps).
Rounds are interleaved across runtimes, so background load hits all alike.
Ratios compare the first runtime listed (kapsel by default) with each other one.
Standard library only.
"""

import argparse
import ctypes
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUNTIMES = [
    ("kapsel", str(REPO / "target/release/kapsel-runtime")),
    ("crun", "/usr/bin/crun"),
    ("runc", "/usr/sbin/runc"),
]
PR_SET_CHILD_SUBREAPER = 36
RSS_KINDS = ["create", "start", "delete", "run", "list", "state"]
GNU_TIME = "/usr/bin/time"


class CommandFailed(Exception):
    """A runtime command exited non-zero or timed out."""


def note(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def wait_gone(pid, timeout):
    """Wait until pid has exited; reap it if it is our child.

    Returns its exit code when we reaped it, None when it was not ours.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            raise CommandFailed(f"process {pid} still alive after {timeout}s")
    finally:
        os.close(fd)
    try:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        return None


def reap_strays():
    """Reap any exited children nobody waits for (orphans handed to us)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Runtime:
    """One runtime binary, its private --root, and what was measured for it."""

    def __init__(self, name, path, workdir, timeout, id_prefix):
        self.name = name
        self.path = path
        self.timeout = timeout
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=workdir))
        self.root = self.dir / "root"
        self.id_prefix = f"{id_prefix}-{name}"
        self.seq = 0
        self.live = {}  # container id -> init pid (or None), not yet deleted
        self.times = {}  # metric -> [seconds]
        self.rss_kb = {}  # command kind -> max RSS in KB seen in the RSS pass
        self.rss_mode = False  # run commands under GNU time, record RSS, not times
        self.errors = {}  # section -> message
        self.broken = False
        self.version = self._version()
        self.size = os.path.getsize(os.path.realpath(path))

    def _version(self):
        try:
            out = subprocess.run([self.path, "--version"], capture_output=True, text=True,
                                 timeout=self.timeout, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.SubprocessError):
            return "?"
        return out.splitlines()[0].strip() if out.strip() else "?"

    def new_id(self):
        self.seq += 1
        return f"{self.id_prefix}-{self.seq}"

    def record(self, metric, seconds):
        if not self.rss_mode:
            self.times.setdefault(metric, []).append(seconds)

    def spawn(self, kind, *args, out_name="out"):
        """Start `RUNTIME --root R ARGS...`; returns a handle for finish()."""
        argv = [self.path, "--root", str(self.root), *map(str, args)]
        out, err = self.dir / f"{out_name}.stdout", self.dir / f"{out_name}.stderr"
        rss_file = None
        if self.rss_mode:
            rss_file = self.dir / f"{out_name}.rss"
            argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
        wr = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(out), wr, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, str(err), wr, 0o600),
        ]
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        return (kind, args, pid, out, err, rss_file)

    def finish(self, handle, check=True):
        """Wait for a spawned command; returns (exit code, stdout path)."""
        kind, args, pid, out, err, rss_file = handle
        try:
            fd = os.pidfd_open(pid)
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                timed_out = not poller.poll(self.timeout * 1000)
            finally:
                os.close(fd)
            if timed_out:
                os.kill(pid, signal.SIGKILL)
        finally:
            _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        if rss_file is not None and rc == 0:
            # GNU time writes "%M" to the -o file; the value is its last word.
            kb = int(rss_file.read_text().split()[-1])
            self.rss_kb[kind] = max(self.rss_kb.get(kind, 0), kb)
        if check and (timed_out or rc != 0):
            why = f"timed out after {self.timeout}s" if timed_out else f"exit {rc}"
            msg = err.read_text(errors="replace").strip()[-600:]
            raise CommandFailed(f"{self.name} {' '.join(map(str, args))}: {why}: {msg}")
        return rc, out

    def cmd(self, kind, *args, check=True):
        """Run one command to completion; returns (seconds, exit code, stdout path)."""
        start = time.perf_counter()
        rc, out = self.finish(self.spawn(kind, *args), check=check)
        return time.perf_counter() - start, rc, out

    # --- the measurements --------------------------------------------------

    def create(self, bundle):
        cid = self.new_id()
        pid_file = self.dir / f"{cid}.pid"
        self.live[cid] = None
        secs, _, _ = self.cmd("create", "create", "--bundle", bundle, "--pid-file", pid_file, cid)
        self.live[cid] = int(pid_file.read_text())
        pid_file.unlink()
        return cid, secs

    def cycle(self, bundle):
        """create, start, wait for the init to exit, delete: what a shim does per container."""
        t0 = time.perf_counter()
        cid, t_create = self.create(bundle)
        t_start, _, _ = self.cmd("start", "start", cid)
        t1 = time.perf_counter()
        rc = wait_gone(self.live[cid], self.timeout)
        t_wait = time.perf_counter() - t1
        t_delete, _, _ = self.cmd("delete", "delete", cid)
        del self.live[cid]
        total = time.perf_counter() - t0
        if rc not in (0, None):
            raise CommandFailed(f"container {cid} (/bin/true) exited with {rc}")
        for metric, secs in (("cycle", total), ("create", t_create), ("start", t_start),
                             ("wait", t_wait), ("delete", t_delete)):
            self.record(metric, secs)

    def run(self, bundle):
        cid = self.new_id()
        self.live[cid] = None
        secs, _, _ = self.cmd("run", "run", "--bundle", bundle, cid)
        del self.live[cid]  # a foreground run deletes its container
        self.record("run", secs)

    def parallel(self, bundle, count):
        ids = [self.new_id() for _ in range(count)]
        for cid in ids:
            self.live[cid] = None
        start = time.perf_counter()
        handles = [self.spawn("run", "run", "--bundle", bundle, cid, out_name=f"par{i}")
                   for i, cid in enumerate(ids)]
        failures = []
        for h in handles:
            try:
                self.finish(h)
            except CommandFailed as e:
                failures.append(str(e))
        secs = time.perf_counter() - start
        for cid in ids:
            del self.live[cid]
        if failures:
            raise CommandFailed(f"{len(failures)}/{count} parallel runs failed; first: {failures[0]}")
        self.record("parallel", secs)

    def listing(self, bundle, count, rounds):
        ids = [self.create(bundle)[0] for _ in range(count)]
        for i in range(rounds):
            secs, _, out = self.cmd("list", "list")
            if i == 0:
                listed = sum(self.id_prefix in line for line in out.read_text().splitlines())
                if listed != count:
                    raise CommandFailed(f"list shows {listed} of our {count} containers")
            self.record("list", secs)
            secs, _, _ = self.cmd("state", "state", ids[i % count])
            self.record("state", secs)
        if os.access(GNU_TIME, os.X_OK):
            self.rss_mode = True
            try:
                self.cmd("list", "list")
                self.cmd("state", "state", ids[0])
            finally:
                self.rss_mode = False
        for cid in ids:
            secs, _, _ = self.cmd("delete", "delete", "--force", cid)
            wait_gone(self.live.pop(cid), self.timeout)
            self.record("delete -f", secs)

    def cleanup(self):
        """Delete whatever is left, kill stray inits, remove the root. Returns leftovers."""
        left = []
        for cid, pid in list(self.live.items()):
            try:
                self.cmd("cleanup", "delete", "--force", cid, check=False)
            except OSError:
                pass
            if pid and os.path.exists(f"/proc/{pid}"):
                try:
                    os.kill(pid, signal.SIGKILL)
                    wait_gone(pid, 5)
                except (OSError, CommandFailed):
                    left.append(f"process {pid} of {cid}")
        self.live.clear()
        if self.root.is_dir():
            left += [f"state {self.root / e}" for e in os.listdir(self.root)]
        shutil.rmtree(self.dir, ignore_errors=True)
        return left


def make_bundle(fixtures, workdir, spec_tool):
    bundle = Path(workdir) / "bundle"
    bundle.mkdir()
    shutil.copytree(fixtures / "rootfs", bundle / "rootfs", symlinks=True)
    subprocess.run([spec_tool, "spec"], cwd=bundle, check=True, stdin=subprocess.DEVNULL)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def leftover_cgroups(prefix):
    """Cgroup directories named after our containers that nobody removed (removes empty ones)."""
    found = []
    base = "/sys/fs/cgroup"
    for dirpath, dirnames, _ in os.walk(base):
        depth = dirpath[len(base):].count("/")
        for d in dirnames:
            if d.startswith(prefix):
                found.append(os.path.join(dirpath, d))
        if depth >= 3:
            dirnames.clear()
        else:
            dirnames[:] = [d for d in dirnames if not d.startswith(prefix)]
    left = []
    for path in sorted(found, key=len, reverse=True):
        try:
            os.rmdir(path)
            left.append(f"cgroup {path} (removed)")
        except OSError:
            left.append(f"cgroup {path}")
    return left


def quantile(values, q):
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def summarize(rt):
    m = {}
    for metric, values in rt.times.items():
        m[metric] = {"median_ms": statistics.median(values) * 1000,
                     "p90_ms": quantile(values, 0.9) * 1000, "n": len(values)}
    return m


ROWS = [
    # label, metric, field, unit
    ("cycle create+start+wait+delete", "cycle", "median_ms", "ms"),
    ("cycle p90", "cycle", "p90_ms", "ms"),
    ("  create", "create", "median_ms", "ms"),
    ("  start", "start", "median_ms", "ms"),
    ("  wait for exit", "wait", "median_ms", "ms"),
    ("  delete", "delete", "median_ms", "ms"),
    ("run (foreground)", "run", "median_ms", "ms"),
    ("run p90", "run", "p90_ms", "ms"),
    ("{par} parallel runs, wall", "parallel", "median_ms", "ms"),
    ("list with {n} created", "list", "median_ms", "ms"),
    ("state with {n} created", "state", "median_ms", "ms"),
    ("delete -f of a created one", "delete -f", "median_ms", "ms"),
]


def table(runtimes, args):
    """Rows of (label, {runtime: value}, unit); lower is better for all of them."""
    rows = []
    for label, metric, field, unit in ROWS:
        label = label.format(par=args.parallel, n=args.containers)
        rows.append((label, {rt.name: rt.summary[metric][field]
                             for rt in runtimes if metric in rt.summary}, unit))
    for kind in RSS_KINDS:
        rows.append((f"peak RSS {kind}", {rt.name: rt.rss_kb[kind] / 1024
                                          for rt in runtimes if rt.rss_kb.get(kind)}, "MB"))
    rows.append(("binary size", {rt.name: rt.size / 1e6 for rt in runtimes}, "MB"))
    return rows


def print_table(rows, runtimes, subject):
    others = [rt.name for rt in runtimes if rt.name != subject]
    names = [rt.name for rt in runtimes]
    ratio_cols = [f"{subject}/{o}" for o in others]
    head = f"{'':32}" + "".join(f"{n:>11}" for n in names) + "".join(f"{c:>14}" for c in ratio_cols)
    print(head)
    print("-" * len(head))
    for label, values, unit in rows:
        cells = "".join(f"{values[n]:>8.{1 if unit == 'ms' else 2}f} {unit:<2}" if n in values
                        else f"{'n/a':>11}" for n in names)
        ratios = ""
        for o in others:
            if subject in values and values.get(o):
                ratios += f"{values[subject] / values[o]:>13.2f}x"
            else:
                ratios += f"{'-':>14}"
        print(f"{label:32}{cells}{ratios}")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fixtures", nargs="?", default=str(REPO / ".fixtures"),
                   help="fixtures dir from scripts/make-fixtures.sh (default: .fixtures; built if missing)")
    p.add_argument("--runtime", action="append", metavar="NAME=PATH",
                   help="runtime to measure, repeatable; the first is compared with the others "
                        "(default: kapsel=target/release/kapsel-runtime crun=/usr/bin/crun runc=/usr/sbin/runc)")
    p.add_argument("--rounds", type=int, default=20, help="samples per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up cycles per runtime (default 3)")
    p.add_argument("--parallel", type=int, default=20, help="concurrent foreground runs (default 20)")
    p.add_argument("--parallel-rounds", type=int, default=5, help="repeats of the parallel batch (default 5)")
    p.add_argument("--containers", type=int, default=50, help="created containers during `list` (default 50)")
    p.add_argument("--rss-rounds", type=int, default=3, help="cycles and runs in the RSS pass (default 3)")
    p.add_argument("--timeout", type=int, default=60, help="seconds before a command counts as hung (default 60)")
    p.add_argument("--spec-from", metavar="PATH",
                   help="runtime whose `spec` writes config.json (default: runc, else the first runtime)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args()
    if args.rounds < 1 or args.parallel < 1 or args.containers < 1 or args.parallel_rounds < 1:
        p.error("counts must be at least 1")
    pairs = []
    for item in args.runtime or [f"{n}={path}" for n, path in DEFAULT_RUNTIMES]:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--runtime {item!r}: expected NAME=PATH")
        if any(name == n for n, _ in pairs):
            p.error(f"--runtime {name} given twice")
        pairs.append((name, path))
    args.runtime = pairs
    return args


def measure(runtimes, bundle, args):
    """All measurements, interleaved by round. A runtime that fails a section skips the rest of it."""

    def each_round(section, count, fn):
        for i in range(count):
            k = i % len(runtimes)
            for rt in runtimes[k:] + runtimes[:k]:
                if rt.broken or section in rt.errors:
                    continue
                try:
                    fn(rt)
                except CommandFailed as e:
                    rt.errors[section] = str(e)
                    note(f"{rt.name}: {section} failed: {e}")
                reap_strays()

    note(f"warm-up: {args.warmup} cycles and one run each")
    for rt in runtimes:
        try:
            for _ in range(args.warmup):
                rt.cycle(bundle)
            rt.run(bundle)
        except CommandFailed as e:
            rt.errors["warm-up"] = str(e)
            rt.broken = True
            note(f"{rt.name}: warm-up failed, not measured: {e}")
        rt.times.clear()
        reap_strays()

    note(f"cycle x{args.rounds}")
    each_round("cycle", args.rounds, lambda rt: rt.cycle(bundle))
    note(f"run x{args.rounds}")
    each_round("run", args.rounds, lambda rt: rt.run(bundle))
    note(f"{args.parallel} parallel runs x{args.parallel_rounds}")
    each_round("parallel", args.parallel_rounds, lambda rt: rt.parallel(bundle, args.parallel))
    note(f"list/state with {args.containers} created containers x{args.rounds}")
    each_round("list", 1, lambda rt: rt.listing(bundle, args.containers, args.rounds))

    if not os.access(GNU_TIME, os.X_OK):
        note(f"{GNU_TIME} not found (apt-get install time): peak RSS not measured")
        return

    def rss_pass(rt):
        rt.rss_mode = True
        try:
            for _ in range(args.rss_rounds):
                rt.cycle(bundle)
                rt.run(bundle)
        finally:
            rt.rss_mode = False

    note(f"peak RSS: {args.rss_rounds} cycles and runs under {GNU_TIME}")
    each_round("rss", 1, rss_pass)


def main():
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/runtime.py must run as root (containers need namespaces, mounts and cgroups)")

    available = []
    for name, path in args.runtime:
        if os.access(path, os.X_OK):
            available.append((name, path))
        else:
            note(f"{name}: {path} not found, skipped")
    if not available:
        sys.exit("no runtime to measure")

    fixtures = Path(args.fixtures).resolve()
    if not (fixtures / "rootfs/bin/busybox").exists():
        note(f"building fixtures in {fixtures}")
        subprocess.run([str(REPO / "scripts/make-fixtures.sh"), str(fixtures)], check=True,
                       stdin=subprocess.DEVNULL)
    hugetlb = REPO / "scripts/cgroup-hugetlb.sh"
    if hugetlb.exists():
        subprocess.run([str(hugetlb)], check=True, stdin=subprocess.DEVNULL)

    spec_tool = args.spec_from or shutil.which("runc") or (
        "/usr/sbin/runc" if os.access("/usr/sbin/runc", os.X_OK) else available[0][1])
    workdir = tempfile.mkdtemp(prefix="kapsel-bench.")
    id_prefix = f"kb{os.getpid()}"
    runtimes = []
    leftovers = []
    load_before = os.getloadavg()
    # SIGTERM unwinds like Ctrl-C, so the finally below still cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bundle = make_bundle(fixtures, workdir, spec_tool)
        become_subreaper()
        runtimes = [Runtime(n, p, workdir, args.timeout, id_prefix) for n, p in available]
        measure(runtimes, bundle, args)
    except KeyboardInterrupt:
        note("interrupted; cleaning up")
        raise
    finally:
        for rt in runtimes:
            leftovers += [f"{rt.name}: {x}" for x in rt.cleanup()]
        reap_strays()
        leftovers += leftover_cgroups(id_prefix)
        shutil.rmtree(workdir, ignore_errors=True)
        for x in leftovers:
            note(f"left behind: {x}")

    measured = [rt for rt in runtimes if not rt.broken]
    for rt in runtimes:
        rt.summary = summarize(rt)
    print(f"\npeak RSS as GNU time's %M (its floor: about 0.5 MB for a static no-op)")
    print(f"kernel {platform.release()}, {os.cpu_count()} cpus, load {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f}, config.json from `{spec_tool} spec`, /bin/true in busybox, "
          f"{args.rounds} rounds")
    for rt in runtimes:
        print(f"  {rt.name:8} {rt.path}  ({rt.version})")
    print()
    if measured:
        subject = measured[0].name
        rows = table(measured, args)
        print_table(rows, measured, subject)
    else:
        rows, subject = [], None
    for rt in runtimes:
        for section, msg in rt.errors.items():
            print(f"\n{rt.name}: {section} failed: {msg}")

    if args.json:
        doc = {
            "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                        "load_before": load_before[0], "load_after": os.getloadavg()[0]},
            "settings": {k: getattr(args, k) for k in ("rounds", "warmup", "parallel",
                                                       "parallel_rounds", "containers")},
            "spec_from": spec_tool,
            "subject": subject,
            "runtimes": {rt.name: {"path": rt.path, "version": rt.version, "binary_bytes": rt.size,
                                   "metrics": rt.summary,
                                   "peak_rss_kb": rt.rss_kb,
                                   "samples_ms": {k: [round(v * 1000, 3) for v in vs]
                                                  for k, vs in rt.times.items()},
                                   "errors": rt.errors}
                         for rt in runtimes},
            "table": [{"label": label, "unit": unit, "values": values} for label, values, unit in rows],
            "left_behind": leftovers,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    failed = any(rt.errors for rt in runtimes) or leftovers
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
