#!/usr/bin/env python3
"""Memory and throughput of kapsel-logger, the per-container log writer.

Usage:
    bench/logger.py [--logger PATH] [--many N] [--mbytes M]

Starts --many loggers the way containerd-shim-kapsel-v2 does (stdout on fd 3, stderr on fd 4,
ready = fd 5 closed), each writing to its own log in a temporary directory, feeds each a few
thousand lines on both streams and prints, per logger, RSS, PSS (shared pages divided among the
loggers: the fair cost of one more container), private dirty memory and page tables. Then one
logger takes --mbytes MiB of 100-byte lines (rotating at 10 MiB, 3 files) and the time and rate
are printed. Docker's json-file runs inside dockerd (no process per container); the
comparable figure there is dockerd's RSS growth per running container.
Release build expected: cargo build --release -p kapsel-manager --bin kapsel-logger
Standard library only.
"""

import argparse
import fcntl
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(logger, log, extra=()):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rdy_r, rdy_w = os.pipe()
    # Sources far above 5, so that placing them at 3, 4, 5 cannot overwrite one another.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (out_r, err_r, rdy_w)]
    for fd in (out_r, err_r, rdy_w):
        os.close(fd)

    def place():
        for target, fd in zip((3, 4, 5), high):
            os.dup2(fd, target)

    p = subprocess.Popen([logger, "path", log, *extra], preexec_fn=place,
                         pass_fds=(3, 4, 5), stdin=subprocess.DEVNULL)
    for fd in high:
        os.close(fd)
    os.read(rdy_r, 1)
    os.close(rdy_r)
    return p, out_w, err_w


def memory(pid):
    m = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k = line.split(":")[0]
            if k in ("Rss", "Pss", "Private_Dirty"):
                m[k] = int(line.split()[1])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmPTE"):
                m["PageTables"] = int(line.split()[1])
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logger", default=os.path.join(ROOT, "target/release/kapsel-logger"))
    ap.add_argument("--many", type=int, default=20)
    ap.add_argument("--mbytes", type=int, default=50)
    a = ap.parse_args()
    if not os.path.exists(a.logger):
        sys.exit(f"{a.logger} not built: cargo build --release -p kapsel-manager --bin kapsel-logger")
    with tempfile.TemporaryDirectory(prefix="kapsel-logger-bench-") as d:
        loggers = [start(a.logger, f"{d}/c{i}-json.log") for i in range(a.many)]
        for _, out, err in loggers:
            for i in range(2000):
                os.write(out, b"line %d of some ordinary output\n" % i)
                os.write(err, b"warning %d\n" % i)
        time.sleep(0.5)
        total = {}
        for p, _, _ in loggers:
            for k, v in memory(p.pid).items():
                total[k] = total.get(k, 0) + v
        print(f"{a.many} loggers, per logger: " +
              ", ".join(f"{k} {v / a.many:.0f} kB" for k, v in total.items()))
        for p, out, err in loggers:
            os.close(out)
            os.close(err)
            p.wait()

        p, out, err = start(a.logger, f"{d}/big-json.log", ("max-size", "10m", "max-file", "3"))
        line = b"x" * 99 + b"\n"
        block = line * 640
        n = a.mbytes * 1024 * 1024 // len(block)
        t = time.monotonic()
        for _ in range(n):
            os.write(out, block)
        os.close(out)
        os.close(err)
        p.wait()
        dt = time.monotonic() - t
        mib = n * len(block) / 1048576
        print(f"throughput: {mib:.0f} MiB of 100-byte lines in {dt:.2f} s = {mib / dt:.0f} MiB/s "
              f"({n * 640 / dt / 1e6:.2f} M lines/s), rotating at 10 MiB")


if __name__ == "__main__":
    main()
