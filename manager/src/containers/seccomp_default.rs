//! The default seccomp profile: what Docker's built-in default profile allows, as our own table,
//! for the x86 family (x86_64 with its x86 and x32 sub-architectures, the only hosts Kapsel
//! builds for). Everything not listed fails with EPERM.
//!
//! The table has three parts, as Docker's does:
//! - syscalls every container may make ([`ALLOWED`], grouped by subject) and a few allowed only
//!   with some arguments (`socket` except AF_VSOCK, the harmless `personality` values);
//! - groups allowed only when the container has a capability ([`BY_CAPABILITY`]): without
//!   CAP_SYS_ADMIN there is no `mount`, `unshare`, `setns`..., and `clone` is allowed only when
//!   its flags ask for no new namespace, while `clone3` (whose flags live in memory a filter
//!   cannot read) answers ENOSYS so that libc falls back to `clone`;
//! - `ptrace`, `process_vm_readv` and `process_vm_writev`, which Docker allows on kernels 4.8
//!   and later (where ptrace no longer bypasses seccomp); Kapsel needs a far newer kernel anyway.
//!
//! Profiles given with `--security-opt seccomp=FILE` may be in Docker's format (`archMap`,
//! `includes`/`excludes` by capability and architecture): [`from_docker_format`] turns them
//! into OCI `linux.seccomp` for the container's capabilities, as dockerd does.

use serde_json::{json, Map, Value};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const AF_VSOCK: u64 = 40;

/// The namespace flags of clone(2) a container without CAP_SYS_ADMIN may not ask for:
/// NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// The architectures of the profile: the host's and the two it can also run.
pub const ARCHITECTURES: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// Syscalls every container may make, by subject. Not io_uring: Docker 25 took it out (its
/// operations bypass seccomp).
#[rustfmt::skip]
pub const ALLOWED: &[(&str, &[&str])] = &[
    (
        "paths, metadata, extended attributes, file watches",
        &[
            "access", "faccessat", "faccessat2",
            "chdir", "fchdir", "getcwd",
            "chmod", "fchmod", "fchmodat",
            "chown", "chown32", "fchown", "fchown32", "fchownat", "lchown", "lchown32",
            "creat", "open", "openat", "openat2", "name_to_handle_at",
            "mkdir", "mkdirat", "mknod", "mknodat", "rmdir",
            "link", "linkat", "symlink", "symlinkat", "readlink", "readlinkat",
            "unlink", "unlinkat", "rename", "renameat", "renameat2",
            "stat", "stat64", "lstat", "lstat64", "fstat", "fstat64", "fstatat64", "newfstatat",
            "statx", "statfs", "statfs64", "fstatfs", "fstatfs64",
            "getdents", "getdents64",
            "truncate", "truncate64", "umask",
            "utime", "utimes", "utimensat", "utimensat_time64", "futimesat",
            "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
            "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr",
            "fremovexattr",
            "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
            "fanotify_mark",
            "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        ],
    ),
    (
        "descriptors and I/O",
        &[
            "read", "readv", "pread64", "preadv", "preadv2",
            "write", "writev", "pwrite64", "pwritev", "pwritev2",
            "lseek", "_llseek", "close", "close_range", "dup", "dup2", "dup3",
            "fcntl", "fcntl64", "flock", "ioctl", "pipe", "pipe2",
            "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
            "ftruncate", "ftruncate64", "fallocate", "fadvise64", "fadvise64_64", "readahead",
            "sendfile", "sendfile64", "splice", "tee", "vmsplice", "copy_file_range",
            "select", "_newselect", "pselect6", "pselect6_time64",
            "poll", "ppoll", "ppoll_time64",
            "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait",
            "epoll_wait_old", "epoll_pwait", "epoll_pwait2",
            "eventfd", "eventfd2", "signalfd", "signalfd4",
            "timerfd_create", "timerfd_settime", "timerfd_settime64", "timerfd_gettime",
            "timerfd_gettime64",
            "memfd_create", "memfd_secret",
            "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents",
            "io_pgetevents", "io_pgetevents_time64",
        ],
    ),
    (
        "memory",
        &[
            "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore",
            "msync", "remap_file_pages", "membarrier",
            "mlock", "mlock2", "mlockall", "munlock", "munlockall",
            "pkey_alloc", "pkey_free", "pkey_mprotect",
        ],
    ),
    (
        "processes, threads, identity, limits",
        &[
            "fork", "vfork", "execve", "execveat", "exit", "exit_group",
            "wait4", "waitid", "waitpid", "restart_syscall",
            "getpid", "getppid", "gettid", "getpgid", "getpgrp", "setpgid", "getsid", "setsid",
            "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid",
            "getegid32", "getresuid", "getresuid32", "getresgid", "getresgid32",
            "getgroups", "getgroups32",
            "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32", "setregid",
            "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32",
            "setfsuid", "setfsuid32", "setfsgid", "setfsgid32", "setgroups", "setgroups32",
            "capget", "capset", "prctl", "seccomp",
            "getrlimit", "ugetrlimit", "setrlimit", "prlimit64", "getrusage", "times",
            "getpriority", "setpriority", "ioprio_get", "ioprio_set",
            "futex", "futex_time64", "futex_waitv", "set_robust_list", "get_robust_list",
            "set_tid_address", "rseq", "set_thread_area", "get_thread_area",
            "arch_prctl", "modify_ldt",
            "pidfd_open", "pidfd_send_signal", "process_mrelease",
            "uname", "sysinfo", "getrandom", "getcpu",
            "ptrace", "process_vm_readv", "process_vm_writev",
        ],
    ),
    (
        "signals",
        &[
            "kill", "tkill", "tgkill", "pause", "alarm", "sigaltstack",
            "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
            "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
            "sigprocmask", "sigreturn",
        ],
    ),
    (
        "clocks and timers",
        &[
            "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres",
            "clock_getres_time64", "clock_nanosleep", "clock_nanosleep_time64", "nanosleep",
            "adjtimex", "clock_adjtime", "clock_adjtime64",
            "getitimer", "setitimer",
            "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
            "timer_gettime64", "timer_settime", "timer_settime64",
        ],
    ),
    (
        "scheduling",
        &[
            "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr",
            "sched_setattr", "sched_getparam", "sched_setparam", "sched_getscheduler",
            "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
            "sched_rr_get_interval", "sched_rr_get_interval_time64",
        ],
    ),
    (
        "System V and POSIX IPC",
        &[
            "ipc", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop",
            "semtimedop_time64", "semctl", "shmget", "shmat", "shmdt", "shmctl",
            "mq_open", "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
            "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
        ],
    ),
    (
        "sockets (socket itself below: not AF_VSOCK)",
        &[
            "socketpair", "socketcall", "bind", "listen", "accept", "accept4", "connect",
            "getsockname", "getpeername", "getsockopt", "setsockopt", "shutdown",
            "send", "sendto", "sendmsg", "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg",
            "recvmmsg_time64",
        ],
    ),
];

/// The `personality(2)` values every container may set: PER_LINUX, PER_LINUX32,
/// UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (query).
pub const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Syscalls allowed only with a capability.
#[rustfmt::skip]
pub const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "mount", "umount", "umount2", "mount_setattr", "move_mount", "open_tree",
            "fsopen", "fsconfig", "fsmount", "fspick",
            "unshare", "setns", "clone", "clone3",
            "sethostname", "setdomainname",
            "bpf", "perf_event_open", "fanotify_init", "lookup_dcookie",
            "quotactl", "quotactl_fd", "syslog",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &["mbind", "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

fn allow(names: &[&str]) -> Value {
    json!({ "names": names, "action": "SCMP_ACT_ALLOW" })
}

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c == cap)
}

/// The default profile as OCI `linux.seccomp` for a container with capabilities `caps`
/// (names as in the spec, `CAP_SYS_ADMIN`).
pub fn default_profile(caps: &[String]) -> Value {
    let mut rules = Vec::new();
    let mut always: Vec<&str> = ALLOWED
        .iter()
        .flat_map(|(_, n)| n.iter().copied())
        .collect();
    always.sort_unstable();
    rules.push(allow(&always));
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": AF_VSOCK, "valueTwo": 0, "op": "SCMP_CMP_NE" }],
    }));
    for p in PERSONALITIES {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": p, "valueTwo": 0, "op": "SCMP_CMP_EQ" }],
        }));
    }
    for (cap, names) in BY_CAPABILITY {
        if has(caps, cap) {
            rules.push(allow(names));
        }
    }
    if !has(caps, "CAP_SYS_ADMIN") {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{
                "index": 0,
                "value": CLONE_NAMESPACE_FLAGS,
                "valueTwo": 0,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }));
        rules.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": ENOSYS,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ARCHITECTURES,
        "syscalls": rules,
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("seccomp profile: {0}")]
    Invalid(String),
}

/// Docker's name for the host architecture in `includes`/`excludes`.
const GO_ARCH: &str = "amd64";

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A profile the user gave, in Docker's format or already OCI `linux.seccomp`, as OCI
/// `linux.seccomp` for a container with `caps` on this host: `archMap` becomes
/// `architectures` (the x86_64 entry with its sub-architectures), rules whose `excludes` name
/// amd64 or one of the caps are dropped, as are rules whose `includes` name architectures
/// without amd64 or caps the container lacks; `name` becomes `names`.
pub fn from_docker_format(profile: &Value, caps: &[String]) -> Result<Value, ProfileError> {
    let obj = profile
        .as_object()
        .ok_or_else(|| ProfileError::Invalid("want a JSON object".into()))?;
    if !obj.get("defaultAction").is_some_and(Value::is_string) {
        return Err(ProfileError::Invalid(
            "defaultAction is missing (want e.g. \"SCMP_ACT_ERRNO\")".into(),
        ));
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "archMap" | "syscalls" | "comment" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(map) = obj.get("archMap").and_then(Value::as_array) {
        if !obj.contains_key("architectures") {
            let entry = map
                .iter()
                .find(|e| e.get("architecture").and_then(Value::as_str) == Some(ARCHITECTURES[0]));
            if let Some(e) = entry {
                let mut archs = vec![ARCHITECTURES[0].to_string()];
                archs.extend(strings(e.get("subArchitectures")));
                out.insert("architectures".into(), json!(archs));
            }
        }
    }
    let mut rules = Vec::new();
    for (i, rule) in obj
        .get("syscalls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let r = rule
            .as_object()
            .ok_or_else(|| ProfileError::Invalid(format!("syscalls[{i}] is not an object")))?;
        if let Some(ex) = r.get("excludes") {
            let arches = strings(ex.get("arches"));
            let ex_caps = strings(ex.get("caps"));
            if arches.iter().any(|a| a == GO_ARCH) || ex_caps.iter().any(|c| has(caps, c)) {
                continue;
            }
        }
        if let Some(inc) = r.get("includes") {
            let arches = strings(inc.get("arches"));
            let inc_caps = strings(inc.get("caps"));
            if !arches.is_empty() && !arches.iter().any(|a| a == GO_ARCH) {
                continue;
            }
            if !inc_caps.iter().all(|c| has(caps, c)) {
                continue;
            }
        }
        let mut names = strings(r.get("names"));
        if let Some(n) = r.get("name").and_then(Value::as_str) {
            names.push(n.to_string());
        }
        if names.is_empty() {
            return Err(ProfileError::Invalid(format!(
                "syscalls[{i}] names no syscall"
            )));
        }
        let mut o = Map::new();
        o.insert("names".into(), json!(names));
        for (k, v) in r {
            match k.as_str() {
                "name" | "names" | "includes" | "excludes" | "comment" => {}
                _ => {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        rules.push(Value::Object(o));
    }
    out.insert("syscalls".into(), Value::Array(rules));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Every name of every rule whose action is ALLOW and that has no argument filter.
    fn unconditional(p: &Value) -> BTreeSet<String> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| strings(r.get("names")))
            .collect()
    }

    #[test]
    fn no_syscall_is_listed_twice_in_the_always_table() {
        let mut seen = BTreeSet::new();
        for (_, names) in ALLOWED {
            for n in *names {
                assert!(seen.insert(*n), "{n} is listed twice");
            }
        }
        assert_eq!(
            seen.len(),
            351,
            "the table changed size: update this count on purpose"
        );
        for (cap, names) in BY_CAPABILITY {
            for n in *names {
                assert!(!seen.contains(n), "{n} of {cap} is also always allowed");
            }
        }
    }

    #[test]
    fn without_sys_admin_namespaces_and_mounts_are_refused() {
        let p = default_profile(&caps(&["CAP_CHOWN", "CAP_SYS_CHROOT"]));
        let allowed = unconditional(&p);
        for n in [
            "mount", "umount2", "unshare", "setns", "clone", "clone3", "reboot", "bpf",
        ] {
            assert!(!allowed.contains(n), "{n} allowed without its capability");
        }
        assert!(allowed.contains("chroot"));
        assert!(allowed.contains("execve") && allowed.contains("ptrace"));
        let rules = p["syscalls"].as_array().unwrap();
        let clone = rules
            .iter()
            .find(|r| r["names"] == json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["value"], json!(0x7e02_0000u64));
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let clone3 = rules
            .iter()
            .find(|r| r["names"] == json!(["clone3"]))
            .unwrap();
        assert_eq!(clone3["errnoRet"], json!(38));
        assert_eq!(p["defaultErrnoRet"], json!(1));
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
    }

    #[test]
    fn sys_admin_opens_the_namespace_group_and_drops_the_clone_filter() {
        let p = default_profile(&caps(&["CAP_SYS_ADMIN"]));
        let allowed = unconditional(&p);
        for n in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "sethostname",
        ] {
            assert!(allowed.contains(n), "{n}");
        }
        let rules = p["syscalls"].as_array().unwrap();
        assert!(!rules.iter().any(|r| r["names"] == json!(["clone3"])));
        assert!(!rules
            .iter()
            .any(|r| r["names"] == json!(["clone"]) && r.get("args").is_some()));
    }

    #[test]
    fn docker_format_profiles_are_filtered_for_caps_and_arch() {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}
            ],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"name": "chroot", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
                {"names": ["s390"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}}
            ]
        });
        let out = from_docker_format(&profile, &caps(&["CAP_SYS_CHROOT"])).unwrap();
        assert_eq!(
            out["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        assert!(out.get("archMap").is_none());
        let names: Vec<Value> = out["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["names"].clone())
            .collect();
        assert_eq!(names, vec![json!(["read", "write"]), json!(["chroot"])]);
        assert!(from_docker_format(&json!({"syscalls": []}), &[]).is_err());
        assert!(from_docker_format(
            &json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}),
            &[]
        )
        .is_err());
    }
}
