//! `exec`: a new process in a running container's namespaces and cgroup.

use std::fs;

use kapsel_integration_tests::host::{cgroup_procs, ns_of};
use kapsel_integration_tests::{
    cap_mask, parse_cap_hex, pid_alive, status_field, wait_until, Bundle, Runtime, SETTLE,
};
use serde_json::json;

/// A running container (`sleep 1000`) with hostname `kt-exec` and `KT_SPEC=spec` in its env.
fn running(rt: &Runtime, tag: &str) -> (Bundle, String) {
    let mut b = Bundle::new(rt);
    b.hostname("kt-exec")
        .env("KT_SPEC=spec")
        .args(&["sleep", "1000"]);
    let id = rt.new_id(tag);
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    (b, id)
}

#[test]
fn exec_runs_in_the_container() {
    let rt = Runtime::new();
    let (_b, id) = running(&rt, "exec-host");
    let out = rt.run_ok(&["exec", &id, "hostname"]);
    assert_eq!(out.stdout, "kt-exec\n", "{out}");
    let init = rt.pid(&id).to_string();
    let out = rt.run_ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "for n in pid net ipc uts mnt; do readlink /proc/self/ns/$n; done",
    ]);
    let inside: Vec<&str> = out.stdout.lines().collect();
    for (i, n) in ["pid", "net", "ipc", "uts", "mnt"].iter().enumerate() {
        assert_eq!(
            inside[i],
            ns_of(&init, n),
            "{n} namespace of the exec'd process"
        );
    }
}

#[test]
fn exec_passes_the_exit_code_through() {
    let rt = Runtime::new();
    let (_b, id) = running(&rt, "exec-rc");
    let out = rt.cmd(&["exec", &id, "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.code, Some(7), "{out}");
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err"), "{out}");
    let out = rt.cmd(&["exec", &id, "false"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
}

#[test]
fn exec_passes_stdin_through() {
    let rt = Runtime::new();
    let (_b, id) = running(&rt, "exec-stdin");
    let out = rt
        .command(&["exec", &id, "sh", "-c", "cat; echo end"])
        .stdin("line one\nline two\n")
        .ok();
    assert_eq!(out.stdout, "line one\nline two\nend\n");
}

#[test]
fn exec_with_process_json() {
    let rt = Runtime::new();
    let (b, id) = running(&rt, "exec-process");
    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
        "args": ["sh", "-c", "echo $KT_FROM_JSON; id; pwd"],
        "env": ["PATH=/bin:/usr/bin", "KT_FROM_JSON=yes"],
        "cwd": "/tmp",
    });
    let file = b.path().join("process.json");
    fs::write(&file, process.to_string()).unwrap();
    let out = rt.run_ok(&["exec", "--process", file.to_str().unwrap(), &id]);
    assert_eq!(
        out.stdout, "yes\nuid=1000 gid=1000 groups=10\n/tmp\n",
        "{out}"
    );
}

#[test]
fn exec_env_cwd_and_user_flags() {
    let rt = Runtime::new();
    let (_b, id) = running(&rt, "exec-flags");
    let out = rt.run_ok(&[
        "exec",
        "-e",
        "KT_ONE=1",
        "-e",
        "KT_SPEC=overridden",
        "--cwd",
        "/usr/bin",
        "-u",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $KT_ONE $KT_SPEC; pwd; id -u; id -g",
    ]);
    assert_eq!(out.stdout, "1 overridden\n/usr/bin\n1000\n1000\n", "{out}");
    // Without flags the process gets the container's env, cwd and user.
    let out = rt.run_ok(&["exec", &id, "sh", "-c", "echo $KT_SPEC; pwd; id -u"]);
    assert_eq!(out.stdout, "spec\n/\n0\n", "{out}");
}

#[test]
fn exec_gets_the_containers_capabilities() {
    let rt = Runtime::new();
    let (_b, id) = running(&rt, "exec-caps");
    let out = rt.run_ok(&["exec", &id, "cat", "/proc/self/status"]);
    let eff = parse_cap_hex(status_field(&out.stdout, "CapEff"));
    assert_eq!(eff, 0x20000420, "{out}");
    let out = rt.run_ok(&[
        "exec",
        "--cap",
        "CAP_NET_ADMIN",
        &id,
        "cat",
        "/proc/self/status",
    ]);
    let bnd = parse_cap_hex(status_field(&out.stdout, "CapBnd"));
    assert_eq!(bnd, 0x20000420 | cap_mask(&["CAP_NET_ADMIN"]), "{out}");
}

#[test]
fn exec_detached_with_pid_file() {
    let rt = Runtime::new();
    let (b, id) = running(&rt, "exec-d");
    let pid_file = b.path().join("exec.pid");
    rt.run_ok(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "999",
    ]);
    let text = fs::read_to_string(&pid_file).expect("--pid-file written");
    let pid: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file: {text:?}"));
    assert!(pid_alive(pid), "exec'd pid {pid} not alive");
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\u{0}999\u{0}");
    for controller in ["memory", "pids", "cpu", "freezer"] {
        assert!(
            cgroup_procs(controller, b.cgroups_path()).contains(&pid),
            "exec'd pid {pid} is not in the container's {controller} cgroup"
        );
    }
    let init = rt.pid(&id).to_string();
    assert_eq!(ns_of(&pid.to_string(), "pid"), ns_of(&init, "pid"));
    // Deleting the container takes the exec'd process with it.
    rt.run_ok(&["delete", "-f", &id]);
    assert!(
        wait_until(SETTLE, || !pid_alive(pid)),
        "exec'd process survived delete -f"
    );
}

#[test]
fn exec_of_a_missing_program_fails() {
    let rt = Runtime::new();
    let (_b, id) = running(&rt, "exec-missing");
    let out = rt.cmd(&["exec", &id, "/bin/no-such-program"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out}");
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
}

#[test]
fn exec_into_a_stopped_container_fails() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["true"]);
    let id = rt.new_id("exec-stopped");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    rt.wait_status(&id, "stopped", SETTLE);
    rt.run_err(&["exec", &id, "true"]);
}

#[test]
fn exec_into_a_paused_container_needs_ignore_paused() {
    let rt = Runtime::new();
    let (_b, id) = running(&rt, "exec-paused");
    rt.run_ok(&["pause", &id]);
    rt.run_err(&["exec", &id, "true"]);
    rt.run_ok(&["resume", &id]);
    rt.run_ok(&["exec", &id, "true"]);
}
