#!/usr/bin/env python3
"""Seccomp costs of runc-compatible OCI runtimes, side by side, on one busybox bundle.

Usage (as root):
    bench/seccomp.py [--runtime NAME=PATH ...] [--rounds N] [--loop-rounds N] [--json FILE] [FIXTURES]

The profile is the one Debian's golang-github-containers-common ships,
/usr/share/containers/seccomp.json, turned into OCI linux.seccomp the way podman
does it: rules kept or dropped by the container's capabilities (the bounding set
of the `runc spec` config) and architecture (amd64), architectures from its archMap.
Every runtime gets the same config.json, with and without linux.seccomp. Measured
per runtime, rounds interleaved across runtimes and with/without:

  run          foreground `run` of /bin/true; with minus without = what installing
               the profile costs (the runtime compiling and loading it)
  dd           `run` of busybox `dd if=/dev/zero of=/dev/null bs=1 count=500000`
               (1M read+write syscalls), wall time minus the same mode's /bin/true
               run (the fastest of each: medians of two whole runs are too noisy on a
               loaded machine), per syscall; with minus without = the filter's cost
  loop rw      the same read+write loop timed inside the container by sysprobe (a static
               helper built here with gcc from integration-tests/helpers/sysprobe.c),
               which reports the cheapest of 20 slices, so that preemption by other
               load on the machine drops out
  loop personality   personality(0xffffffff) in a loop: the profile filters personality
               by its argument, so the kernel cannot skip the filter through its
               per-syscall allow cache (Linux >= 5.11) as it can for read and write
  loop getppid allowed whatever the arguments: the cache path

run times are medians; the in-container loops are medians of sysprobe's figures.
Ratios compare the first runtime (kapsel by default) with each other one.
Standard library only; shares the runtime driver of bench/runtime.py.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime import (DEFAULT_RUNTIMES, REPO, CommandFailed, Runtime, become_subreaper,
                     leftover_cgroups, note, reap_strays)

PROFILE = Path("/usr/share/containers/seccomp.json")
SYSPROBE_SRC = REPO / "integration-tests/helpers/sysprobe.c"
DD_COUNT = 500000  # bytes, one read and one write each
MODES = ("plain", "seccomp")


def filter_profile(v, caps, arch="amd64"):
    """containers-common (docker) profile format -> OCI linux.seccomp for `caps` on `arch`.

    As podman and docker do: a rule is dropped when its excludes name the arch or one of
    the caps, or when its includes name arches without this one or caps not all held.
    """
    syscalls = []
    for s in v["syscalls"]:
        inc, exc = s.get("includes") or {}, s.get("excludes") or {}
        if arch in (exc.get("arches") or []) or any(c in caps for c in exc.get("caps") or []):
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if inc.get("caps") and not all(c in caps for c in inc["caps"]):
            continue
        rule = {"names": s["names"], "action": s["action"]}
        if s.get("errnoRet") is not None:
            rule["errnoRet"] = s["errnoRet"]
        if s.get("args"):
            rule["args"] = s["args"]
        syscalls.append(rule)
    arches = []
    for m in v.get("archMap") or []:
        if m["architecture"] == "SCMP_ARCH_X86_64":
            arches = [m["architecture"], *(m.get("subArchitectures") or [])]
    p = {"defaultAction": v["defaultAction"], "architectures": arches, "syscalls": syscalls}
    if v.get("defaultErrnoRet") is not None:
        p["defaultErrnoRet"] = v["defaultErrnoRet"]
    return p


class Bundles:
    """One rootfs copy (busybox + sysprobe) and a bundle directory per (command, mode)."""

    def __init__(self, fixtures, workdir, spec_tool):
        self.dir = Path(workdir)
        self.rootfs = self.dir / "rootfs"
        shutil.copytree(fixtures / "rootfs", self.rootfs, symlinks=True)
        subprocess.run(["gcc", "-static", "-O2", "-o", str(self.rootfs / "bin/sysprobe"),
                        str(SYSPROBE_SRC)], check=True, stdin=subprocess.DEVNULL)
        tmp = self.dir / "spec"
        tmp.mkdir()
        subprocess.run([spec_tool, "spec"], cwd=tmp, check=True, stdin=subprocess.DEVNULL)
        self.base = json.loads((tmp / "config.json").read_text())
        self.base["root"] = {"path": str(self.rootfs), "readonly": True}
        self.base["process"]["terminal"] = False
        caps = self.base["process"].get("capabilities", {}).get("bounding", [])
        self.caps = caps
        self.profile = filter_profile(json.loads(PROFILE.read_text()), caps)
        self.paths = {}

    def get(self, name, args, mode):
        key = (name, mode)
        if key not in self.paths:
            b = self.dir / f"{name}-{mode}"
            b.mkdir()
            config = json.loads(json.dumps(self.base))
            config["process"]["args"] = args
            if mode == "seccomp":
                config["linux"]["seccomp"] = self.profile
            else:
                config["linux"].pop("seccomp", None)
            (b / "config.json").write_text(json.dumps(config, indent=1))
            self.paths[key] = b
        return self.paths[key]


def run_out(rt, bundle):
    """Foreground run; returns (seconds, stdout text)."""
    cid = rt.new_id()
    rt.live[cid] = None
    try:
        secs, _, out = rt.cmd("run", "run", "--bundle", bundle, cid)
    finally:
        del rt.live[cid]
    return secs, out.read_text()


def measure(runtimes, bundles, args):
    loops = {
        "loop rw": ["/bin/sysprobe", "loop", "rw", str(args.loop_count)],
        "loop personality": ["/bin/sysprobe", "loop", "personality", str(args.loop_count)],
        "loop getppid": ["/bin/sysprobe", "loop", "getppid", str(args.loop_count)],
    }
    dd = ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={DD_COUNT}"]

    def each_round(section, count, fn):
        for i in range(count):
            k = i % len(runtimes)
            order = MODES if i % 2 == 0 else MODES[::-1]
            for rt in runtimes[k:] + runtimes[:k]:
                if rt.broken or section in rt.errors:
                    continue
                for mode in order:
                    try:
                        fn(rt, mode)
                    except CommandFailed as e:
                        rt.errors[section] = str(e)
                        note(f"{rt.name}: {section} ({mode}) failed: {e}")
                        break
                    finally:
                        reap_strays()

    def true_run(rt, mode):
        secs, _ = run_out(rt, bundles.get("true", ["/bin/true"], mode))
        rt.record(f"run {mode}", secs)

    def dd_run(rt, mode):
        secs, _ = run_out(rt, bundles.get("dd", dd, mode))
        rt.record(f"dd {mode}", secs)

    def loop_run(name):
        def fn(rt, mode):
            _, text = run_out(rt, bundles.get(name.replace(" ", "-"), loops[name], mode))
            words = text.split()
            if len(words) != 2 or words[0] != "ns_per_syscall":
                raise CommandFailed(f"{name}: unexpected output {text!r}")
            rt.record(f"{name} {mode}", float(words[1]) / 1e9)  # kept in seconds like the rest
        return fn

    note("warm-up: one run of each bundle per runtime")
    for rt in runtimes:
        try:
            for mode in MODES:
                true_run(rt, mode)
                dd_run(rt, mode)
                for name in loops:
                    loop_run(name)(rt, mode)
        except CommandFailed as e:
            rt.errors["warm-up"] = str(e)
            rt.broken = True
            note(f"{rt.name}: warm-up failed, not measured: {e}")
        rt.times.clear()
        reap_strays()

    note(f"run /bin/true x{args.rounds}, with and without the profile")
    each_round("run", args.rounds, true_run)
    note(f"dd ({2 * DD_COUNT} syscalls) x{args.loop_rounds}")
    each_round("dd", args.loop_rounds, dd_run)
    for name in loops:
        note(f"{name} ({args.loop_count} syscalls) x{args.loop_rounds}")
        each_round(name, args.loop_rounds, loop_run(name))


def rows_for(rt):
    """(label, value, unit) of one runtime; None where a section failed."""
    med = {k: statistics.median(v) for k, v in rt.times.items()}

    def get(k, scale):
        return med[k] * scale if k in med else None

    def diff(a, b):
        return None if a is None or b is None else a - b

    out = []
    run_p, run_s = get("run plain", 1e3), get("run seccomp", 1e3)
    out += [("run /bin/true, no seccomp", run_p, "ms"),
            ("run /bin/true, containers-common", run_s, "ms"),
            ("  = installing the profile", diff(run_s, run_p), "ms")]
    # dd's per-syscall figure is a difference of two wall times that both include a whole
    # `run`: the fastest of each, as the least disturbed by other load, not their medians.
    fastest = {k: min(v) for k, v in rt.times.items()}
    per = {}
    for mode in MODES:
        dd = fastest[f"dd {mode}"] * 1e9 if f"dd {mode}" in fastest else None
        true = fastest[f"run {mode}"] * 1e9 if f"run {mode}" in fastest else None
        per[mode] = None if dd is None or true is None else (dd - true) / (2 * DD_COUNT)
    out += [("dd 1M syscalls, no seccomp", per["plain"], "ns"),
            ("dd 1M syscalls, containers-common", per["seccomp"], "ns"),
            ("  = filter cost per syscall", diff(per["seccomp"], per["plain"]), "ns")]
    for name in ("loop rw", "loop personality", "loop getppid"):
        p, s = get(f"{name} plain", 1e9), get(f"{name} seccomp", 1e9)
        out += [(f"{name}, no seccomp", p, "ns"),
                (f"{name}, containers-common", s, "ns"),
                ("  = filter cost per syscall", diff(s, p), "ns")]
    return out


def print_table(runtimes, subject):
    names = [rt.name for rt in runtimes]
    others = [n for n in names if n != subject]
    per_rt = {rt.name: rows_for(rt) for rt in runtimes}
    labels = [(label, unit) for label, _, unit in per_rt[names[0]]]
    head = f"{'':36}" + "".join(f"{n:>12}" for n in names) + "".join(
        f"{subject + '/' + o:>14}" for o in others)
    print(head)
    print("-" * len(head))
    table = []
    for i, (label, unit) in enumerate(labels):
        values = {n: per_rt[n][i][1] for n in names}
        cells = "".join(f"{values[n]:>9.2f} {unit:<2}" if values[n] is not None else f"{'n/a':>12}"
                        for n in names)
        ratios = ""
        for o in others:
            a, b = values[subject], values[o]
            ratios += f"{a / b:>13.2f}x" if a is not None and b and b > 0 and a >= 0 else f"{'-':>14}"
        print(f"{label:36}{cells}{ratios}")
        table.append({"label": label, "unit": unit, "values": values})
    return table


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fixtures", nargs="?", default=str(REPO / ".fixtures"),
                   help="fixtures dir from scripts/make-fixtures.sh (default: .fixtures)")
    p.add_argument("--runtime", action="append", metavar="NAME=PATH",
                   help="runtime to measure, repeatable; the first is compared with the others "
                        "(default: kapsel=target/release/kapsel-runtime crun=/usr/bin/crun runc=/usr/sbin/runc)")
    p.add_argument("--rounds", type=int, default=20, help="runs of /bin/true per mode (default 20)")
    p.add_argument("--loop-rounds", type=int, default=7, help="runs of each syscall loop per mode (default 7)")
    p.add_argument("--loop-count", type=int, default=1000000,
                   help="syscalls per sysprobe loop (default 1000000)")
    p.add_argument("--timeout", type=int, default=120, help="seconds before a command counts as hung")
    p.add_argument("--spec-from", metavar="PATH", help="runtime whose `spec` writes config.json (default runc)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args()
    if args.rounds < 1 or args.loop_rounds < 1 or args.loop_count < 2:
        p.error("counts must be at least 1 (loop count at least 2)")
    pairs = []
    for item in args.runtime or [f"{n}={path}" for n, path in DEFAULT_RUNTIMES]:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--runtime {item!r}: expected NAME=PATH")
        pairs.append((name, path))
    args.runtime = pairs
    return args


def main():
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/seccomp.py must run as root (containers need namespaces, mounts and cgroups)")
    if not PROFILE.exists():
        sys.exit(f"{PROFILE} missing: apt-get install golang-github-containers-common")
    if not shutil.which("gcc"):
        sys.exit("gcc missing (it builds the sysprobe helper): apt-get install build-essential")
    available = [(n, p) for n, p in args.runtime if os.access(p, os.X_OK)]
    for n, p in args.runtime:
        if (n, p) not in available:
            note(f"{n}: {p} not found, skipped")
    if not available:
        sys.exit("no runtime to measure")
    fixtures = Path(args.fixtures).resolve()
    if not (fixtures / "rootfs/bin/busybox").exists():
        sys.exit(f"no busybox rootfs in {fixtures}: run scripts/make-fixtures.sh")
    hugetlb = REPO / "scripts/cgroup-hugetlb.sh"
    if hugetlb.exists():
        subprocess.run([str(hugetlb)], check=True, stdin=subprocess.DEVNULL)

    spec_tool = args.spec_from or shutil.which("runc") or "/usr/sbin/runc"
    workdir = tempfile.mkdtemp(prefix="kapsel-bench-seccomp.")
    id_prefix = f"ks{os.getpid()}"
    runtimes, leftovers = [], []
    load_before = os.getloadavg()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bundles = Bundles(fixtures, workdir, spec_tool)
        become_subreaper()
        runtimes = [Runtime(n, p, workdir, args.timeout, id_prefix) for n, p in available]
        measure(runtimes, bundles, args)
    finally:
        for rt in runtimes:
            leftovers += [f"{rt.name}: {x}" for x in rt.cleanup()]
        reap_strays()
        leftovers += leftover_cgroups(id_prefix)
        shutil.rmtree(workdir, ignore_errors=True)
        for x in leftovers:
            note(f"left behind: {x}")

    measured = [rt for rt in runtimes if not rt.broken]
    print(f"\nkernel {platform.release()}, {os.cpu_count()} cpus, load {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f}; config.json from `{spec_tool} spec`; profile {PROFILE} "
          f"filtered for {len(bundles.caps)} caps ({len(bundles.profile['syscalls'])} rules); "
          f"medians of {args.rounds} runs, {args.loop_rounds} per loop")
    for rt in runtimes:
        print(f"  {rt.name:8} {rt.path}  ({rt.version})")
    print()
    table = print_table(measured, measured[0].name) if measured else []
    for rt in runtimes:
        for section, msg in rt.errors.items():
            print(f"\n{rt.name}: {section} failed: {msg}")
    if args.json:
        doc = {
            "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                        "load_before": load_before[0], "load_after": os.getloadavg()[0]},
            "settings": {k: getattr(args, k) for k in ("rounds", "loop_rounds", "loop_count")},
            "runtimes": {rt.name: {"path": rt.path, "version": rt.version,
                                   "samples": {k: v for k, v in rt.times.items()},
                                   "errors": rt.errors} for rt in runtimes},
            "table": table,
            "left_behind": leftovers,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(rt.errors for rt in runtimes) or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
