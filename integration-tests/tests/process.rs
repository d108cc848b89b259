//! The container process: capabilities, rlimits, user and groups, env, cwd,
//! no_new_privs, seccomp.

use kapsel_integration_tests::{
    cap_mask, kapsel_only, parse_cap_hex, proc_status_field, status_field, Bundle, CmdOutput,
    Runtime, ALL_CAPS,
};
use serde_json::json;

fn run(rt: &Runtime, b: &Bundle, tag: &str) -> CmdOutput {
    let id = rt.new_id(tag);
    rt.cmd(&["run", "--bundle", b.dir_str(), &id])
}

#[track_caller]
fn run_ok(rt: &Runtime, b: &Bundle, tag: &str) -> String {
    let out = run(rt, b, tag);
    assert!(out.success(), "run failed:\n{out}");
    out.stdout
}

fn cap(status: &str, field: &str) -> u64 {
    parse_cap_hex(status_field(status, field))
}

/// The host's bounding set (this test process's).
fn host_bounding_set() -> u64 {
    parse_cap_hex(&proc_status_field(std::process::id() as i32, "CapBnd").unwrap())
}

#[test]
fn default_capabilities_match_the_spec() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["cat", "/proc/self/status"]);
    let status = run_ok(&rt, &b, "caps-default");
    let expected = cap_mask(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    assert_eq!(expected, 0x20000420);
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(cap(&status, field), expected, "{field}:\n{status}");
    }
    assert_eq!(cap(&status, "CapInh"), 0, "{status}");
}

#[test]
fn capability_sets_are_applied_separately() {
    // A non-root user, so the kernel's exec rules are simple: busybox has no
    // file caps, so after exec P' = E' = ambient; bounding and inheritable stay.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let bounding = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
        "CAP_SETPCAP",
    ];
    let permitted = ["CAP_KILL", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"];
    let effective = ["CAP_KILL", "CAP_NET_ADMIN"];
    let inheritable = ["CAP_KILL", "CAP_NET_ADMIN"];
    let ambient = ["CAP_KILL"];
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}))
        .set(
            "/process/capabilities",
            json!({
                "bounding": bounding,
                "permitted": permitted,
                "effective": effective,
                "inheritable": inheritable,
                "ambient": ambient,
            }),
        )
        .args(&["cat", "/proc/self/status"]);
    let status = run_ok(&rt, &b, "caps-sets");
    assert_eq!(cap(&status, "CapBnd"), cap_mask(&bounding), "{status}");
    assert_eq!(cap(&status, "CapInh"), cap_mask(&inheritable), "{status}");
    assert_eq!(cap(&status, "CapAmb"), cap_mask(&ambient), "{status}");
    assert_eq!(cap(&status, "CapPrm"), cap_mask(&ambient), "{status}");
    assert_eq!(cap(&status, "CapEff"), cap_mask(&ambient), "{status}");
}

#[test]
fn root_with_no_new_privs_keeps_its_permitted_set() {
    // uid 0: exec would grant the whole bounding set, but no_new_privs (default
    // spec) keeps permitted at what the runtime set; effective follows.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let bounding = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"];
    let permitted = ["CAP_KILL", "CAP_NET_ADMIN"];
    b.set(
        "/process/capabilities",
        json!({"bounding": bounding, "permitted": permitted, "effective": permitted}),
    )
    .args(&["cat", "/proc/self/status"]);
    let status = run_ok(&rt, &b, "caps-nnp");
    assert_eq!(cap(&status, "CapBnd"), cap_mask(&bounding), "{status}");
    assert_eq!(cap(&status, "CapPrm"), cap_mask(&permitted), "{status}");
    assert_eq!(cap(&status, "CapEff"), cap_mask(&permitted), "{status}");
}

#[test]
fn root_keeps_permitted_and_effective_across_exec() {
    // uid 0 with no file caps: the kernel gives root its permitted set back on exec,
    // limited by the bounding set, and effective = permitted.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let set = ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"];
    b.set(
        "/process/capabilities",
        json!({"bounding": set, "permitted": set, "effective": set}),
    )
    .args(&["cat", "/proc/self/status"]);
    let status = run_ok(&rt, &b, "caps-root");
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(cap(&status, field), cap_mask(&set), "{field}:\n{status}");
    }
}

#[test]
fn missing_capability_is_enforced() {
    // Without CAP_SYS_ADMIN, mount fails; with it (and a private mount ns), it works.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("mount -t tmpfs none /tmp && echo mounted");
    let out = run(&rt, &b, "caps-enforced");
    assert_ne!(
        out.stdout.trim(),
        "mounted",
        "mount worked without CAP_SYS_ADMIN:\n{out}"
    );
    let set = ["CAP_SYS_ADMIN"];
    b.set(
        "/process/capabilities",
        json!({"bounding": set, "permitted": set, "effective": set}),
    );
    let out = run(&rt, &b, "caps-granted");
    assert_eq!(
        out.stdout.trim(),
        "mounted",
        "mount failed with CAP_SYS_ADMIN:\n{out}"
    );
}

#[test]
fn all_capabilities_inside_the_host_bounding_set_work() {
    // Everything the host has (this machine lacks CAP_SYS_RESOURCE): runc and kapsel agree.
    let rt = Runtime::new();
    let host = host_bounding_set();
    let names: Vec<&str> = ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| host & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect();
    let mut b = Bundle::new(&rt);
    b.set(
        "/process/capabilities",
        json!({"bounding": names, "permitted": names, "effective": names, "inheritable": names, "ambient": names}),
    )
    .args(&["cat", "/proc/self/status"]);
    let status = run_ok(&rt, &b, "caps-host");
    assert_eq!(cap(&status, "CapBnd"), host, "{status}");
    assert_eq!(cap(&status, "CapEff"), host, "{status}");
}

#[test]
fn kapsel_all_caps_work() {
    // docker --privileged asks for every capability. runc fails on this machine
    // ("unable to apply caps: operation not permitted") because CAP_SYS_RESOURCE is
    // not in the host's bounding set; kapsel leaves out what the host lacks, with a
    // warning, and runs.
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let host = host_bounding_set();
    let all = ALL_CAPS.to_vec();
    let mut b = Bundle::new(&rt);
    b.set(
        "/process/capabilities",
        json!({"bounding": all, "permitted": all, "effective": all,
               "inheritable": all, "ambient": all}),
    )
    .args(&["cat", "/proc/self/status"]);
    let out = run(&rt, &b, "caps-all");
    assert!(
        out.success(),
        "every capability should work with kapsel:\n{out}"
    );
    assert_eq!(cap(&out.stdout, "CapBnd"), host, "{out}");
    assert_eq!(cap(&out.stdout, "CapEff"), host, "{out}");
    assert_eq!(cap(&out.stdout, "CapPrm"), host, "{out}");
    if host & (1 << 24) == 0 {
        assert!(
            out.stderr.contains("CAP_SYS_RESOURCE"),
            "no warning naming the capability that was left out:\n{out}"
        );
    }
}

#[test]
fn unknown_capability_name_is_ignored() {
    // runc (and runtime-spec 1.2) warn about capabilities they cannot map and run anyway.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let caps = ["CAP_KILL", "CAP_NO_SUCH_THING"];
    b.set(
        "/process/capabilities",
        json!({"bounding": caps, "permitted": caps, "effective": caps}),
    )
    .args(&["cat", "/proc/self/status"]);
    let status = run_ok(&rt, &b, "caps-unknown");
    assert_eq!(cap(&status, "CapBnd"), cap_mask(&["CAP_KILL"]), "{status}");
    assert_eq!(cap(&status, "CapEff"), cap_mask(&["CAP_KILL"]), "{status}");
}

#[test]
fn kapsel_unknown_capability_warning_names_it() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.set(
        "/process/capabilities/bounding",
        json!(["CAP_KILL", "CAP_NO_SUCH_THING"]),
    )
    .args(&["true"]);
    let out = run(&rt, &b, "caps-unknown-msg");
    assert!(out.success(), "{out}");
    assert!(
        out.stderr.contains("CAP_NO_SUCH_THING"),
        "no warning naming it:\n{out}"
    );
}

#[test]
fn rlimit_nofile_from_the_spec() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("ulimit -n; ulimit -Hn; grep 'open files' /proc/self/limits");
    let out = run_ok(&rt, &b, "rlimit");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1024", "soft:\n{out}");
    assert_eq!(lines[1], "1024", "hard:\n{out}");
    let fields: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(fields[3..5], ["1024", "1024"], "{out}");
}

#[test]
fn several_rlimits() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set(
        "/process/rlimits",
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            {"type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608},
        ]),
    )
    .args(&["cat", "/proc/self/limits"]);
    let out = run_ok(&rt, &b, "rlimits");
    for (label, soft, hard) in [
        ("Max open files", "100", "200"),
        ("Max processes", "300", "400"),
        ("Max core file size", "0", "0"),
        ("Max stack size", "4194304", "8388608"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label}:\n{out}"));
        let rest: Vec<&str> = line[label.len()..].split_whitespace().collect();
        assert_eq!(rest[..2], [soft, hard], "{line}");
    }
}

#[test]
fn rlimit_equal_to_the_hosts_hard_limit_works() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let hard = lim.rlim_max;
    b.set(
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "soft": hard, "hard": hard}]),
    )
    .sh("ulimit -Hn");
    assert_eq!(run_ok(&rt, &b, "rlimit-host").trim(), hard.to_string());
}

fn bundle_rlimit_above_host(rt: &Runtime) -> Bundle {
    let mut b = Bundle::new(rt);
    b.set(
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "soft": 1048576u64, "hard": 1048576u64}]),
    )
    .args(&["true"]);
    b
}

#[test]
fn rlimit_above_the_hosts_hard_limit_fails() {
    // Raising a hard limit needs CAP_SYS_RESOURCE, which this machine's bounding set lacks.
    let rt = Runtime::new();
    assert_eq!(
        host_bounding_set() & (1 << 24),
        0,
        "precondition: CAP_SYS_RESOURCE is not in the bounding set on this machine"
    );
    let b = bundle_rlimit_above_host(&rt);
    let id = rt.new_id("rlimit-high");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn kapsel_rlimit_error_names_the_limit() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let b = bundle_rlimit_above_host(&rt);
    let id = rt.new_id("rlimit-msg");
    let out = rt.create_must_fail(&b, &id, &[]);
    assert!(
        out.stderr.contains("RLIMIT_NOFILE"),
        "the error does not name RLIMIT_NOFILE:\n{out}"
    );
}

#[test]
fn user_group_and_additional_groups() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set(
        "/process/user",
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}),
    )
    .sh("id; grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    let out = run_ok(&rt, &b, "user");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "uid=1000 gid=1000 groups=10,20", "{out}");
    assert_eq!(
        status_field(&out, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(
        status_field(&out, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(status_field(&out, "Groups"), "10 20");
}

#[test]
fn non_root_user_has_no_effective_capabilities() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}))
        .args(&["cat", "/proc/self/status"]);
    let status = run_ok(&rt, &b, "user-caps");
    assert_eq!(cap(&status, "CapEff"), 0, "{status}");
    assert_eq!(cap(&status, "CapPrm"), 0, "{status}");
    assert_eq!(cap(&status, "CapBnd"), 0x20000420, "{status}");
}

#[test]
fn umask_from_the_spec() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/user/umask", json!(0o027))
        .args(&["sh", "-c", "umask"]);
    assert_eq!(run_ok(&rt, &b, "umask").trim(), "0027");
}

#[test]
fn env_and_cwd_from_the_spec() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.env("KT_ONE=1")
        .env("KT_SPACES=a b  c")
        .set("/process/cwd", json!("/usr/bin"))
        .sh("pwd; echo \"$KT_ONE|$KT_SPACES|$PATH\"");
    let out = run_ok(&rt, &b, "env");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "/usr/bin");
    assert_eq!(
        lines[1],
        "1|a b  c|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

/// A process.cwd that does not exist in the rootfs is created (runc does so), also under a
/// read-only root, owned by root with mode 0755, and the process starts in it.
#[test]
fn missing_cwd_is_created() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.private_rootfs()
        .set("/process/cwd", json!("/kt/made/here"))
        .set("/root/readonly", json!(true))
        .sh("pwd; stat -c '%u:%g %a' /kt/made/here /kt");
    let out = run_ok(&rt, &b, "cwd");
    assert_eq!(out, "/kt/made/here\n0:0 755\n0:0 755\n", "{out:?}");
}

#[test]
fn no_new_privileges_flag() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("grep NoNewPrivs /proc/self/status");
    assert!(run_ok(&rt, &b, "nnp-on").contains("NoNewPrivs:\t1"));
    b.set("/process/noNewPrivileges", json!(false));
    assert!(run_ok(&rt, &b, "nnp-off").contains("NoNewPrivs:\t0"));
}

#[test]
fn seccomp_errno_rule() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set(
        "/linux/seccomp",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        }),
    )
    .mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))
    .sh("mkdir /tmp/d; echo rc=$?; touch /tmp/f; echo rc=$?; grep Seccomp: /proc/self/status");
    let out = run(&rt, &b, "seccomp");
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "rc=1", "mkdir was not blocked:\n{out}");
    assert_eq!(lines[1], "rc=0", "touch was blocked:\n{out}");
    assert_eq!(lines[2], "Seccomp:\t2", "no seccomp filter:\n{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
}

#[test]
fn seccomp_kill_process_rule() {
    // `hostname NAME` calls sethostname, which the filter answers with SIGSYS.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set(
        "/linux/seccomp",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"}],
        }),
    )
    .sh("echo before; hostname kt-nope; echo rc=$?");
    let out = run(&rt, &b, "seccomp-kill");
    assert!(out.success(), "{out}");
    assert_eq!(
        out.stdout, "before\nrc=159\n",
        "hostname was not killed by SIGSYS:\n{out}"
    );
}

#[test]
fn umask_applies_to_created_files() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/user/umask", json!(0o077))
        .mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))
        .sh("touch /tmp/f; mkdir /tmp/d; stat -c '%A %n' /tmp/f /tmp/d");
    assert_eq!(
        run_ok(&rt, &b, "umask-files"),
        "-rw------- /tmp/f\ndrwx------ /tmp/d\n"
    );
}

#[test]
fn oom_score_adj_from_the_spec() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/oomScoreAdj", json!(500))
        .args(&["cat", "/proc/self/oom_score_adj"]);
    assert_eq!(run_ok(&rt, &b, "oom-500"), "500\n");
}

fn bundle_negative_oom_score_adj(rt: &Runtime) -> Bundle {
    let mut b = Bundle::new(rt);
    b.set("/process/oomScoreAdj", json!(-500)).args(&["true"]);
    b
}

/// Lowering oom_score_adj below the runtime's own needs CAP_SYS_RESOURCE,
/// which this machine's bounding set lacks; the tests run with 0.
#[track_caller]
fn assert_cannot_lower_oom_score_adj() {
    assert_eq!(
        host_bounding_set() & (1 << 24),
        0,
        "precondition: CAP_SYS_RESOURCE is not in the bounding set on this machine"
    );
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    assert_eq!(
        own.trim(),
        "0",
        "precondition: the tests run with oom_score_adj 0"
    );
}

#[test]
fn negative_oom_score_adj_without_cap_sys_resource_fails() {
    let rt = Runtime::new();
    assert_cannot_lower_oom_score_adj();
    let b = bundle_negative_oom_score_adj(&rt);
    let id = rt.new_id("oom-neg");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn kapsel_oom_score_adj_error_names_the_field() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    assert_cannot_lower_oom_score_adj();
    let b = bundle_negative_oom_score_adj(&rt);
    let id = rt.new_id("oom-msg");
    let out = rt.create_must_fail(&b, &id, &[]);
    assert!(
        out.stderr.contains("oomScoreAdj"),
        "the error does not name oomScoreAdj:\n{out}"
    );
}
