//! Hooks: each kind runs at its point of the lifecycle, in the namespace the
//! runtime-spec gives it, with the container state on stdin; failures and timeouts.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kapsel_integration_tests::host::ns_of;
use kapsel_integration_tests::{wait_until, Bundle, Runtime, SETTLE};
use serde_json::{json, Value};

/// A hook run by the host's /bin/sh (runtime namespace, or container namespace
/// before pivot_root) that saves in `out` its stdin, its namespaces, whether it
/// sees the host's root (the host has /usr/bin/dash, the busybox rootfs does not),
/// its env and argv0, and its name in `order`.
fn host_side_hook(out: &Path, name: &str) -> Value {
    let o = out.display();
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!(
            "cat > {o}/{name}.json; \
             readlink /proc/self/ns/net > {o}/{name}.net; \
             readlink /proc/self/ns/mnt > {o}/{name}.mnt; \
             if [ -e /usr/bin/dash ]; then echo host; else echo container; fi > {o}/{name}.root; \
             echo \"$KT_HOOK $0\" > {o}/{name}.env; \
             echo {name} >> {o}/order")],
        "env": ["KT_HOOK=yes", "PATH=/usr/bin:/bin"],
    })
}

fn read(out: &Path, file: &str) -> String {
    fs::read_to_string(out.join(file))
        .unwrap_or_else(|e| panic!("hook output {file} missing ({e})"))
        .trim()
        .to_string()
}

fn state_of(out: &Path, name: &str) -> Value {
    let text = read(out, &format!("{name}.json"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} hook got invalid state JSON on stdin ({e}): {text:?}"))
}

#[test]
fn every_hook_runs_at_its_point_with_the_state() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out = b.host_dir("hooks");
    let o = out.clone();
    b.bind(&out, "/var", &[]).args(&["sleep", "1000"]);
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        b.hook(kind, host_side_hook(&o, kind));
    }
    // startContainer runs in the container after pivot_root: /bin/sh is the
    // rootfs's busybox, and the bind mount at /var is how its files get out.
    b.hook(
        "startContainer",
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c",
                "cat > /var/startContainer.json; \
                 readlink /proc/self/ns/net > /var/startContainer.net; \
                 readlink /proc/self/ns/mnt > /var/startContainer.mnt; \
                 readlink /proc/$$/exe > /var/startContainer.exe; \
                 if [ -e /usr/bin/dash ]; then echo host; else echo container; fi > /var/startContainer.root; \
                 echo startContainer >> /var/order"],
        }),
    );
    let id = rt.new_id("hooks");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    let pid = rt.pid(&id);
    let pid_s = pid.to_string();
    let host_net = ns_of("self", "net");
    let host_mnt = ns_of("self", "mnt");
    let ctr_net = ns_of(&pid_s, "net");
    let ctr_mnt = ns_of(&pid_s, "mnt");
    assert_ne!(host_net, ctr_net);

    // runc 1.1 also runs poststart during create (see kapsel_poststart_runs_at_start).
    let order = read(&out, "order");
    assert_eq!(
        order.lines().take(3).collect::<Vec<_>>(),
        ["prestart", "createRuntime", "createContainer"],
        "hooks run by create"
    );
    assert!(
        !order.contains("startContainer"),
        "startContainer ran at create: {order}"
    );
    for name in ["prestart", "createRuntime", "createContainer"] {
        let state = state_of(&out, name);
        assert_eq!(state["id"], id.as_str(), "{name}: {state}");
        // createContainer runs inside the container's pid namespace: runc reports
        // pid 1 there; the host pid is only required of the runtime-namespace hooks.
        if name != "createContainer" {
            assert_eq!(state["pid"].as_i64(), Some(pid as i64), "{name}: {state}");
        }
        assert_eq!(state["bundle"], b.dir_str(), "{name}: {state}");
        assert!(state["ociVersion"].is_string(), "{name}: {state}");
        assert_eq!(
            read(&out, &format!("{name}.env")),
            "yes sh",
            "{name}: env or argv0"
        );
    }
    // Runtime namespace for prestart and createRuntime...
    for name in ["prestart", "createRuntime"] {
        assert_eq!(
            read(&out, &format!("{name}.net")),
            host_net,
            "{name} net ns"
        );
        assert_eq!(
            read(&out, &format!("{name}.mnt")),
            host_mnt,
            "{name} mnt ns"
        );
    }
    // ...the container's for createContainer (its path still resolved on the host).
    assert_eq!(
        read(&out, "createContainer.net"),
        ctr_net,
        "createContainer net ns"
    );
    assert_eq!(
        read(&out, "createContainer.mnt"),
        ctr_mnt,
        "createContainer mnt ns"
    );
    assert_eq!(
        read(&out, "createContainer.root"),
        "host",
        "createContainer root"
    );
    assert_eq!(read(&out, "prestart.root"), "host", "prestart root");

    rt.run_ok(&["start", &id]);
    let order = read(&out, "order");
    let mut ran: Vec<&str> = order.lines().collect();
    ran.sort();
    assert_eq!(
        ran,
        [
            "createContainer",
            "createRuntime",
            "poststart",
            "prestart",
            "startContainer"
        ],
        "hooks run by create and start (poststart before start returns)"
    );
    assert_eq!(
        read(&out, "startContainer.net"),
        ctr_net,
        "startContainer net ns"
    );
    assert_eq!(
        read(&out, "startContainer.mnt"),
        ctr_mnt,
        "startContainer mnt ns"
    );
    assert_eq!(
        read(&out, "startContainer.exe"),
        "/bin/busybox",
        "startContainer path"
    );
    assert_eq!(
        read(&out, "startContainer.root"),
        "container",
        "startContainer root"
    );
    assert_eq!(state_of(&out, "startContainer")["id"], id.as_str());
    let post = state_of(&out, "poststart");
    assert_eq!(post["id"], id.as_str());
    assert_eq!(post["pid"].as_i64(), Some(pid as i64));
    assert_eq!(read(&out, "poststart.net"), host_net, "poststart net ns");
    assert!(!out.join("poststop.json").exists());

    rt.run_ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped", SETTLE);
    rt.run_ok(&["delete", &id]);
    let stop = state_of(&out, "poststop");
    assert_eq!(stop["id"], id.as_str(), "{stop}");
    assert_eq!(stop["status"], "stopped", "{stop}");
    assert_eq!(read(&out, "poststop.net"), host_net, "poststop net ns");
    assert_eq!(read(&out, "order").lines().last(), Some("poststop"));
}

#[test]
fn kapsel_poststart_runs_at_start() {
    // runtime-spec: poststart runs after the user process started, before `start`
    // returns. runc 1.1.5 runs it during `create`; we follow the spec.
    let rt = Runtime::new();
    if !kapsel_integration_tests::kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    let out = b.host_dir("hooks");
    let o = out.clone();
    b.bind(&out, "/var", &[]).args(&["sleep", "1000"]);
    for kind in ["prestart", "createRuntime", "createContainer", "poststart"] {
        b.hook(kind, host_side_hook(&o, kind));
    }
    b.hook(
        "startContainer",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer >> /var/order"]}),
    );
    let id = rt.new_id("hook-poststart");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    assert_eq!(
        read(&out, "order").lines().collect::<Vec<_>>(),
        ["prestart", "createRuntime", "createContainer"],
        "hooks run by create"
    );
    rt.run_ok(&["start", &id]);
    assert_eq!(
        read(&out, "order").lines().collect::<Vec<_>>(),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart"
        ],
        "hooks run by start"
    );
}

#[test]
fn hooks_run_in_order_within_a_kind() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out = b.host_dir("hooks");
    for n in 1..=3 {
        b.hook(
            "prestart",
            json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {n} >> {}/order", out.display())]}),
        );
    }
    b.args(&["true"]);
    let id = rt.new_id("hook-order");
    rt.run_ok(&["run", "--bundle", b.dir_str(), &id]);
    assert_eq!(read(&out, "order"), "1\n2\n3");
}

#[test]
fn run_fires_the_hooks_too() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out = b.host_dir("hooks");
    for kind in ["prestart", "createRuntime", "poststart", "poststop"] {
        b.hook(kind, host_side_hook(&out, kind));
    }
    b.args(&["true"]);
    let id = rt.new_id("hook-run");
    rt.run_ok(&["run", "--bundle", b.dir_str(), &id]);
    // `run` without --keep deletes the container, so poststop runs as well.
    assert!(
        wait_until(SETTLE, || read(&out, "order").lines().count() == 4),
        "order: {:?}",
        fs::read_to_string(out.join("order"))
    );
    assert_eq!(
        read(&out, "order").lines().collect::<Vec<_>>(),
        ["prestart", "createRuntime", "poststart", "poststop"]
    );
}

#[test]
fn failing_prestart_hook_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out = b.host_dir("hooks");
    b.hook(
        "prestart",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "echo kt-hook-complains >&2; exit 3"]}),
    )
    .hook("createRuntime", host_side_hook(&out, "createRuntime"))
    .args(&["sleep", "1000"]);
    let id = rt.new_id("hook-fail");
    rt.create_must_fail(&b, &id, &[]);
    assert!(
        !out.join("createRuntime.json").exists(),
        "a later hook ran after prestart failed"
    );
}

#[test]
fn failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.hook(
        "createRuntime",
        json!({"path": "/bin/false", "args": ["false"]}),
    )
    .args(&["sleep", "1000"]);
    let id = rt.new_id("hook-fail-cr");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn hook_with_a_missing_binary_fails_create() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.hook("prestart", json!({"path": "/no/such/hook"}))
        .args(&["sleep", "1000"]);
    let id = rt.new_id("hook-missing");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn hook_timeout_fails_create_in_time() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.hook(
        "prestart",
        json!({"path": "/bin/sleep", "args": ["sleep", "60"], "timeout": 1}),
    )
    .args(&["sleep", "1000"]);
    let id = rt.new_id("hook-timeout");
    let started = Instant::now();
    rt.create_must_fail(&b, &id, &[]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "create took {took:?} with a 1 s hook timeout"
    );
}

#[test]
fn kapsel_hook_failure_names_the_hook() {
    let rt = Runtime::new();
    if !kapsel_integration_tests::kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.hook(
        "prestart",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "echo kt-hook-complains >&2; exit 3"]}),
    )
    .args(&["sleep", "1000"]);
    let id = rt.new_id("hook-msg");
    let out = rt.create_must_fail(&b, &id, &[]);
    assert!(
        out.stderr.contains("prestart"),
        "the error does not name the hook kind:\n{out}"
    );
    assert!(
        out.stderr.contains("/bin/sh"),
        "the error does not name the hook path:\n{out}"
    );
    assert!(
        out.stderr.contains("kt-hook-complains"),
        "the hook's own stderr is not passed on:\n{out}"
    );
}

#[test]
fn kapsel_hook_timeout_names_the_timeout() {
    let rt = Runtime::new();
    if !kapsel_integration_tests::kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.hook(
        "prestart",
        json!({"path": "/bin/sleep", "args": ["sleep", "60"], "timeout": 1}),
    )
    .args(&["sleep", "1000"]);
    let id = rt.new_id("hook-timeout-msg");
    let out = rt.create_must_fail(&b, &id, &[]);
    assert!(
        out.stderr.contains("timed out") || out.stderr.contains("timeout"),
        "the error does not say the hook timed out:\n{out}"
    );
    assert!(
        out.stderr.contains("/bin/sleep"),
        "the error does not name the hook:\n{out}"
    );
}
