//! Bad input: each failure is reported with a non-zero exit code, and a failed
//! `create` leaves nothing behind (no state, no cgroup, no process).
//! The `kapsel_*` tests check that our messages name what was wrong.

use std::fs;

use kapsel_integration_tests::{kapsel_only, pid_alive, wait_until, Bundle, Runtime, SETTLE};
use serde_json::{json, Value};

fn bundle_missing_config(rt: &Runtime) -> Bundle {
    let b = Bundle::new(rt);
    fs::remove_file(b.config_path()).unwrap();
    b
}

fn bundle_malformed_json(rt: &Runtime) -> Bundle {
    let b = Bundle::new(rt);
    fs::write(
        b.config_path(),
        "{\"ociVersion\": \"1.0.2\", \"process\": {bad",
    )
    .unwrap();
    b
}

fn bundle_empty_args(rt: &Runtime) -> Bundle {
    let mut b = Bundle::new(rt);
    b.set("/process/args", json!([]));
    b
}

fn bundle_missing_rootfs(rt: &Runtime) -> Bundle {
    let mut b = Bundle::new(rt);
    let missing = b.path().join("no-such-rootfs");
    b.set("/root/path", json!(missing.to_str().unwrap()));
    b
}

#[test]
fn create_without_config_json_fails_cleanly() {
    let rt = Runtime::new();
    let b = bundle_missing_config(&rt);
    let id = rt.new_id("no-config");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn create_with_malformed_json_fails_cleanly() {
    let rt = Runtime::new();
    let b = bundle_malformed_json(&rt);
    let id = rt.new_id("bad-json");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn create_with_empty_args_fails_cleanly() {
    let rt = Runtime::new();
    let b = bundle_empty_args(&rt);
    let id = rt.new_id("no-args");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn create_with_missing_rootfs_fails_cleanly() {
    let rt = Runtime::new();
    let b = bundle_missing_rootfs(&rt);
    let id = rt.new_id("no-rootfs");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn create_with_missing_executable_fails_cleanly() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["/bin/no-such-program"]);
    let id = rt.new_id("no-exe");
    // runc reports a missing executable at create time; so must we.
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn run_with_missing_executable_fails() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["/bin/no-such-program"]);
    let id = rt.new_id("run-no-exe");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.code.is_some_and(|c| c != 0), "{out}");
    rt.assert_nothing_left(&b, &id, &out);
}

#[test]
fn create_with_id_in_use_fails_and_keeps_the_first() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("dup");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    let pid = rt.pid(&id);
    let mut b2 = Bundle::new(&rt);
    b2.args(&["sleep", "1000"]);
    let out = rt.cmd(&["create", "--bundle", b2.dir_str(), &id]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "second create with the same id:\n{out}"
    );
    // The first container is untouched; the second left no cgroup.
    assert_eq!(rt.status(&id).as_deref(), Some("created"));
    assert_eq!(rt.pid(&id), pid);
    assert!(pid_alive(pid));
    assert!(
        kapsel_integration_tests::host::cgroup_dirs_present(b2.cgroups_path()).is_empty(),
        "the failed create made a cgroup"
    );
}

#[test]
fn create_with_invalid_id_fails() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["true"]);
    for bad in ["../escape", "a/b", ""] {
        let out = rt.cmd(&["create", "--bundle", b.dir_str(), bad]);
        assert!(
            out.code.is_some_and(|c| c != 0),
            "id {bad:?} accepted:\n{out}"
        );
    }
    assert!(rt.list_ids().is_empty());
    assert!(
        !b.path().parent().unwrap().join("escape").exists(),
        "an id with ../ wrote outside --root"
    );
}

#[test]
fn unknown_id_fails_for_every_command() {
    let rt = Runtime::new();
    let id = rt.new_id("ghost");
    for args in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id, "KILL"],
        vec!["delete", &id],
        vec!["exec", &id, "true"],
        vec!["pause", &id],
        vec!["resume", &id],
        vec!["ps", &id],
        vec!["update", "--memory", "64m", &id],
        vec!["events", "--stats", &id],
    ] {
        let out = rt.cmd(&args);
        assert!(
            out.code.is_some_and(|c| c != 0),
            "{args:?} on an unknown id:\n{out}"
        );
    }
}

#[test]
fn kill_with_bad_signal_fails_and_container_keeps_running() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("badsig");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    for bad in ["NOTASIG", "SIGNOPE", "999", "-1"] {
        let out = rt.cmd(&["kill", &id, bad]);
        assert!(out.code.is_some_and(|c| c != 0), "kill {bad}:\n{out}");
    }
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
}

#[test]
fn delete_of_running_container_needs_force() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("del-run");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let pid = rt.pid(&id);
    rt.run_err(&["delete", &id]);
    assert_eq!(
        rt.status(&id).as_deref(),
        Some("running"),
        "delete without -f changed it"
    );
    assert!(pid_alive(pid));
    rt.run_ok(&["delete", "-f", &id]);
    assert!(
        wait_until(SETTLE, || !pid_alive(pid)),
        "init survived delete -f"
    );
    assert!(rt.list_ids().is_empty());
    assert!(!rt.root_mentions(&id));
    assert!(wait_until(SETTLE, || {
        kapsel_integration_tests::host::cgroup_dirs_present(b.cgroups_path()).is_empty()
    }));
}

#[test]
fn delete_of_created_container_works_without_force() {
    // runc deletes a created (never started) container without --force.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("del-created");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    let pid = rt.pid(&id);
    rt.run_ok(&["delete", &id]);
    assert!(wait_until(SETTLE, || !pid_alive(pid)));
    let out = rt.cmd(&["state", &id]);
    rt.assert_nothing_left(&b, &id, &out);
}

#[test]
fn start_twice_and_start_of_stopped_fail() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["true"]);
    let id = rt.new_id("start2");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    rt.run_ok(&["start", &id]);
    rt.wait_status(&id, "stopped", SETTLE);
    rt.run_err(&["start", &id]);
}

#[test]
fn spec_refuses_to_overwrite_config_json() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    fs::write(&config, "{\"mine\": true}").unwrap();
    let out = rt.command(&["spec"]).current_dir(dir.path()).output();
    assert!(
        out.code.is_some_and(|c| c != 0),
        "spec over an existing config.json:\n{out}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), "{\"mine\": true}");
    // --bundle DIR works the same way.
    let out = rt.cmd(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(out.code.is_some_and(|c| c != 0), "{out}");
    assert_eq!(fs::read_to_string(&config).unwrap(), "{\"mine\": true}");
}

#[test]
fn spec_writes_a_usable_default() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    rt.run_ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let v: Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(v["process"]["args"], json!(["sh"]));
    assert_eq!(v["process"]["terminal"], true);
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    for t in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(
            ns.contains(&t),
            "default spec lacks the {t} namespace: {ns:?}"
        );
    }
    assert!(!ns.contains(&"user"), "default spec has a user namespace");
}

#[test]
fn spec_rootless_has_a_user_namespace() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    rt.run_ok(&[
        "spec",
        "--rootless",
        "--bundle",
        dir.path().to_str().unwrap(),
    ]);
    let v: Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    let ns = v["linux"]["namespaces"].as_array().unwrap();
    assert!(
        ns.iter().any(|n| n["type"] == "user"),
        "no user namespace: {v}"
    );
    let uid_map = &v["linux"]["uidMappings"][0];
    assert_eq!(uid_map["containerID"], 0, "{v}");
    assert_eq!(uid_map["size"], 1, "{v}");
    assert!(v["linux"]["gidMappings"][0].is_object(), "{v}");
}

// ---- kapsel-only: our error messages name what failed -----------------------

/// stderr of a failed create of `b`, for the wording checks.
fn create_err(rt: &Runtime, b: &Bundle, tag: &str) -> String {
    let id = rt.new_id(tag);
    rt.create_must_fail(b, &id, &[]).stderr
}

#[test]
fn kapsel_error_missing_config_names_the_file() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let b = bundle_missing_config(&rt);
    let err = create_err(&rt, &b, "w-no-config");
    assert!(
        err.contains("config.json"),
        "message does not name config.json: {err:?}"
    );
}

#[test]
fn kapsel_error_malformed_json_names_file_and_position() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let b = bundle_malformed_json(&rt);
    let err = create_err(&rt, &b, "w-bad-json");
    assert!(
        err.contains("config.json"),
        "message does not name config.json: {err:?}"
    );
    assert!(
        err.contains("line") || err.contains("column"),
        "message does not say where the JSON is broken: {err:?}"
    );
}

#[test]
fn kapsel_error_empty_args_names_the_field() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let b = bundle_empty_args(&rt);
    let err = create_err(&rt, &b, "w-no-args");
    assert!(
        err.contains("process.args"),
        "message does not name process.args: {err:?}"
    );
}

#[test]
fn kapsel_error_missing_rootfs_names_the_path() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let b = bundle_missing_rootfs(&rt);
    let err = create_err(&rt, &b, "w-no-rootfs");
    assert!(
        err.contains("no-such-rootfs"),
        "message does not name the rootfs path: {err:?}"
    );
}

#[test]
fn kapsel_error_missing_executable_names_it() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.args(&["/bin/no-such-program"]);
    let err = create_err(&rt, &b, "w-no-exe");
    assert!(
        err.contains("/bin/no-such-program"),
        "message does not name the program: {err:?}"
    );
}

#[test]
fn kapsel_error_id_in_use_names_the_id() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("w-dup");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    let err = rt.run_err(&["create", "--bundle", b.dir_str(), &id]);
    assert!(err.contains(&id), "message does not name the id: {err:?}");
}

#[test]
fn kapsel_error_unknown_id_names_the_id() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let id = rt.new_id("w-ghost");
    for args in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id, "KILL"],
        vec!["delete", &id],
        vec!["exec", &id, "true"],
        vec!["pause", &id],
    ] {
        let err = rt.run_err(&args);
        assert!(
            err.contains(&id),
            "{args:?}: message does not name the id: {err:?}"
        );
        assert!(
            err.contains("not found") || err.contains("does not exist"),
            "{args:?}: {err:?}"
        );
    }
}

#[test]
fn kapsel_error_bad_signal_names_the_signal() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("w-sig");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let err = rt.run_err(&["kill", &id, "NOTASIG"]);
    assert!(
        err.contains("NOTASIG"),
        "message does not name the signal: {err:?}"
    );
}

#[test]
fn kapsel_error_delete_running_says_to_force() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("w-del");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let err = rt.run_err(&["delete", &id]);
    assert!(err.contains(&id), "message does not name the id: {err:?}");
    assert!(
        err.contains("running"),
        "message does not say it is running: {err:?}"
    );
    assert!(
        err.contains("force"),
        "message does not point at --force: {err:?}"
    );
}

#[test]
fn kapsel_error_spec_exists_names_the_file() {
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = rt.run_err(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(
        err.contains("config.json"),
        "message does not name config.json: {err:?}"
    );
}
