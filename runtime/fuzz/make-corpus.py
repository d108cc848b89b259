#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (corpus/config, corpus/seccomp).

Usage: runtime/fuzz/make-corpus.py [RUNTIME]   (default target/release/kapsel-runtime)

Seeds: the configs of `RUNTIME spec` and `spec --rootless`, podman's config.json
(podman-config.json, kept as captured from `podman init` of busybox), the same spec
carrying the containers-common profile; and as seccomp profiles: the containers-common
file as shipped (/usr/share/containers/seccomp.json, its extra fields are ignored),
that file filtered for docker's default capabilities the way podman and docker
filter it, podman's filtered profile, and small profiles for each action, operator,
architecture and flag. Files already in the corpus (crash inputs found by the
fuzzer) are left alone. Standard library only.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONTAINERS_PROFILE = Path("/usr/share/containers/seccomp.json")
DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def filter_profile(v, caps, arch="amd64"):
    """The containers-common/docker profile format -> OCI linux.seccomp for caps on arch."""
    out = []
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
        out.append(rule)
    arches = []
    for m in v.get("archMap") or []:
        if m["architecture"] == "SCMP_ARCH_X86_64":
            arches = [m["architecture"]] + m.get("subArchitectures", [])
    p = {"defaultAction": v["defaultAction"], "architectures": arches, "syscalls": out}
    if v.get("defaultErrnoRet") is not None:
        p["defaultErrnoRet"] = v["defaultErrnoRet"]
    return p


def small_profiles():
    acts = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG"]
    ops = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
           "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"]
    out = {}
    for a in acts:
        out[f"action-{a[9:].lower()}"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": a, "errnoRet": 13}],
        }
    out["action-notify"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
        "listenerMetadata": "m", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }
    for o in ops:
        out[f"op-{o[9:].lower()}"] = {
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "write", "exit_group", "execve"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0xffffffff00000008, "valueTwo": 8, "op": o},
                          {"index": 5, "value": 3, "valueTwo": 1, "op": o}]},
            ],
        }
    out["clone-flags"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }
    out["arches-flags"] = {
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                  "SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [{"names": ["socketcall", "_llseek", "read", "no_such_syscall"],
                      "action": "SCMP_ACT_ALLOW"},
                     {"names": ["openat"], "action": "SCMP_ACT_LOG",
                      "args": [{"index": 2, "value": 0o100, "valueTwo": 0o100,
                                "op": "SCMP_CMP_MASKED_EQ"}]}],
    }
    return out


def write(dir_, name, obj):
    d = HERE / "corpus" / dir_
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(obj, indent=1) + "\n")


def main():
    runtime = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "target/release/kapsel-runtime")

    def spec(*args):
        with tempfile.TemporaryDirectory() as bundle:
            subprocess.run([runtime, "spec", *args, "--bundle", bundle], check=True)
            return json.loads((Path(bundle) / "config.json").read_text())

    default, rootless = spec(), spec("--rootless")
    podman = json.loads((HERE / "podman-config.json").read_text())
    write("config", "spec", default)
    write("config", "spec-rootless", rootless)
    write("config", "podman", podman)
    write("seccomp", "podman", podman["linux"]["seccomp"])
    common = json.loads(CONTAINERS_PROFILE.read_text())
    write("seccomp", "containers-common-raw", common)
    filtered = filter_profile(common, DOCKER_CAPS)
    write("seccomp", "containers-common-docker-caps", filtered)
    write("seccomp", "containers-common-no-caps", filter_profile(common, []))
    with_profile = json.loads(json.dumps(default))
    with_profile["linux"]["seccomp"] = filtered
    write("config", "spec-containers-common", with_profile)
    for name, p in small_profiles().items():
        write("seccomp", name, p)
    with_small = json.loads(json.dumps(default))
    with_small["linux"]["seccomp"] = small_profiles()["op-masked_eq"]
    write("config", "spec-masked-eq", with_small)


if __name__ == "__main__":
    main()
