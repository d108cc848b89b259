//! The container lifecycle: run, create/start/state/kill/delete, list.

use std::fs;
use std::path::Path;
use std::time::Duration;

use kapsel_integration_tests::host::{cgroup_dirs_present, cgroup_procs};
use kapsel_integration_tests::{pid_alive, wait_until, Bundle, CmdOutput, Runtime, SETTLE};
use serde_json::Value;

#[test]
fn run_prints_output_and_passes_exit_code_through() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("echo hi; echo oops >&2; exit 3");
    let id = rt.new_id("run-exit");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert_eq!(out.code, Some(3), "exit code of the container:\n{out}");
    assert_eq!(out.stdout, "hi\n", "container stdout:\n{out}");
    assert!(out.stderr.contains("oops"), "container stderr:\n{out}");
    // Without --keep, `run` deletes the container once it exited.
    assert!(rt.list_ids().is_empty(), "run left a container behind");
    assert!(
        cgroup_dirs_present(b.cgroups_path()).is_empty(),
        "run left cgroups behind: {:?}",
        cgroup_dirs_present(b.cgroups_path())
    );
}

#[test]
fn run_exit_code_zero() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["true"]);
    let id = rt.new_id("run-zero");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert_eq!(out.code, Some(0), "{out}");
}

#[test]
fn run_reports_death_by_signal_as_128_plus_n() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("run-sig");
    let running = rt
        .command(&["run", "--bundle", b.dir_str(), &id])
        .timeout(Duration::from_secs(30))
        .spawn();
    rt.wait_status(&id, "running", SETTLE);
    rt.run_ok(&["kill", &id, "KILL"]);
    let out = running.wait();
    assert_eq!(out.code, Some(128 + 9), "run after SIGKILL:\n{out}");
}

#[test]
fn run_without_pid_namespace_process_killing_itself_with_sigterm() {
    // Not pid 1 of a pid namespace, so the shell's own SIGTERM is not ignored.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.remove_namespace("pid").sh("kill -TERM $$; sleep 5");
    let id = rt.new_id("run-term");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert_eq!(out.code, Some(128 + 15), "{out}");
}

#[test]
fn run_detached_then_delete() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("run-d");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
    let pid = rt.pid(&id);
    assert!(pid_alive(pid));
    rt.run_ok(&["delete", "--force", &id]);
    assert!(
        wait_until(SETTLE, || !pid_alive(pid)),
        "pid {pid} survived delete --force"
    );
    assert!(rt.list_ids().is_empty());
}

fn assert_state_fields(state: &Value, id: &str, bundle: &Path, status: &str) {
    assert_eq!(state["id"], id, "state: {state}");
    assert_eq!(state["status"], status, "state: {state}");
    assert_eq!(
        Path::new(state["bundle"].as_str().unwrap_or_default()),
        bundle,
        "state: {state}"
    );
    assert!(
        state["ociVersion"].is_string(),
        "state without ociVersion: {state}"
    );
}

#[test]
fn lifecycle_create_start_kill_delete() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    b.bind(&out_dir, "/var", &[])
        .sh("echo started > /var/started; exec sleep 1000");
    let id = rt.new_id("life");
    let pid_file = b.path().join("init.pid");

    rt.run_ok(&[
        "create",
        "--bundle",
        b.dir_str(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let state = rt.state(&id);
    assert_state_fields(&state, &id, b.path(), "created");
    let pid = state["pid"].as_i64().expect("pid in state") as i32;
    assert!(pid > 0, "state pid: {state}");
    assert!(
        pid_alive(pid),
        "init {pid} of a created container is not alive"
    );
    let from_file = fs::read_to_string(&pid_file).expect("--pid-file written");
    assert_eq!(from_file.trim(), pid.to_string(), "--pid-file vs state pid");
    // Created, not started: the user process has not run yet.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !out_dir.join("started").exists(),
        "the process ran before `start`"
    );
    for controller in ["memory", "pids", "cpu"] {
        let dir = b.cgroup_dir(controller);
        assert!(dir.is_dir(), "{} missing after create", dir.display());
        assert!(
            cgroup_procs(controller, b.cgroups_path()).contains(&pid),
            "init {pid} not in {}",
            dir.display()
        );
    }

    rt.run_ok(&["start", &id]);
    assert!(
        wait_until(SETTLE, || out_dir.join("started").exists()),
        "the container's process did not write /var/started after start"
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("started")).unwrap(),
        "started\n"
    );
    let state = rt.state(&id);
    assert_state_fields(&state, &id, b.path(), "running");
    assert_eq!(
        state["pid"].as_i64(),
        Some(pid as i64),
        "pid changed on start"
    );
    // A second start of a running container fails.
    rt.run_err(&["start", &id]);

    rt.run_ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped", SETTLE);
    assert!(
        wait_until(SETTLE, || !pid_alive(pid)),
        "pid {pid} still alive"
    );

    rt.run_ok(&["delete", &id]);
    assert!(
        rt.cmd(&["state", &id]).code != Some(0),
        "state still works after delete"
    );
    assert!(
        !rt.root_mentions(&id),
        "state left under --root: {:?}",
        rt.root_entries()
    );
    assert!(
        wait_until(SETTLE, || cgroup_dirs_present(b.cgroups_path()).is_empty()),
        "cgroups left after delete: {:?}",
        cgroup_dirs_present(b.cgroups_path())
    );
    assert!(rt.list_ids().is_empty());
}

#[test]
fn kill_default_signal_is_sigterm() {
    // sh as pid 1 ignores SIGTERM unless it traps it: a trap proves which signal came.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    b.bind(&out_dir, "/var", &[]).sh(
        "trap 'echo TERM > /var/got; exit 0' TERM; echo ready > /var/ready; while true; do sleep 0.1; done",
    );
    let id = rt.new_id("kill-term");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    assert!(wait_until(SETTLE, || out_dir.join("ready").exists()));
    rt.run_ok(&["kill", &id]);
    assert!(
        wait_until(SETTLE, || out_dir.join("got").exists()),
        "the container did not get SIGTERM from `kill ID`"
    );
    rt.wait_status(&id, "stopped", SETTLE);
}

#[test]
fn kill_accepts_signal_names_and_numbers() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    b.bind(&out_dir, "/var", &[]).sh(
        "trap 'echo USR1 >> /var/got' USR1; trap 'echo HUP >> /var/got' HUP; echo ready > /var/ready; \
         while true; do sleep 0.1; done",
    );
    let id = rt.new_id("kill-names");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    assert!(wait_until(SETTLE, || out_dir.join("ready").exists()));
    rt.run_ok(&["kill", &id, "SIGUSR1"]);
    assert!(wait_until(SETTLE, || fs::read_to_string(
        out_dir.join("got")
    )
    .unwrap_or_default()
    .contains("USR1")));
    rt.run_ok(&["kill", &id, "1"]);
    assert!(wait_until(SETTLE, || fs::read_to_string(
        out_dir.join("got")
    )
    .unwrap_or_default()
    .contains("HUP")));
    rt.run_ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped", SETTLE);
}

#[test]
fn list_table_json_and_quiet() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let mut b2 = Bundle::new(&rt);
    b2.args(&["sleep", "1000"]);
    let created = rt.new_id("list-c");
    let running = rt.new_id("list-r");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &created]);
    rt.run_ok(&["run", "-d", "--bundle", b2.dir_str(), &running]);

    let table = rt.run_ok(&["list"]).stdout;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "list header:\n{table}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "list rows:\n{table}");
    for (id, status, bundle) in [(&created, "created", &b), (&running, "running", &b2)] {
        let row = rows
            .iter()
            .find(|r| r.first() == Some(&id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{table}"));
        assert_eq!(row.len(), 6, "row {row:?}");
        assert_eq!(row[1], rt.pid(id).to_string(), "pid column:\n{table}");
        assert_eq!(row[2], status, "status column:\n{table}");
        assert_eq!(row[3], bundle.dir_str(), "bundle column:\n{table}");
        assert_eq!(row[5], "root", "owner column:\n{table}");
    }

    let json = rt.run_ok(&["list", "-f", "json"]).stdout;
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let items = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {json}"));
    assert_eq!(items.len(), 2, "{json}");
    for (id, status, bundle) in [(&created, "created", &b), (&running, "running", &b2)] {
        let item = items
            .iter()
            .find(|i| i["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in {json}"));
        assert_eq!(item["status"], status, "{json}");
        assert_eq!(item["pid"].as_i64(), Some(rt.pid(id) as i64), "{json}");
        assert_eq!(item["bundle"], bundle.dir_str(), "{json}");
        assert!(item["created"].is_string(), "{json}");
        assert_eq!(item["owner"], "root", "{json}");
    }

    let mut quiet = rt.list_ids();
    quiet.sort();
    let mut expected = vec![created.clone(), running.clone()];
    expected.sort();
    assert_eq!(quiet, expected);
}

#[test]
fn list_of_empty_root_is_header_only() {
    let rt = Runtime::new();
    let out = rt.run_ok(&["list"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].starts_with("ID"), "{out}");
    let json = rt.run_ok(&["list", "-f", "json"]).stdout;
    let v: Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    // runc prints `null` for no containers; an empty array is as good.
    assert!(
        v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
        "list -f json with no containers: {json}"
    );
}

/// `kill --all ID USR1` reaches the init and both of its `sleep` children;
/// a plain `kill ID USR1` before it reaches the init only.
fn kill_all_reaches_every_process(pid_namespace: bool) {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    if !pid_namespace {
        b.remove_namespace("pid");
    }
    // The trap does not survive exec: the sleeps die of USR1; the shell counts them.
    b.bind(&out_dir, "/var", &[]).sh(
        "trap 'echo usr1 >> /var/got' USR1; sleep 100 & sleep 100 & echo ready > /var/ready; \
         while true; do wait; sleep 1; done",
    );
    let id = rt.new_id("kill-all");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let init = rt.pid(&id);
    assert!(wait_until(SETTLE, || out_dir.join("ready").exists()));
    let mut sleeps = Vec::new();
    assert!(
        wait_until(SETTLE, || {
            sleeps = cgroup_procs("pids", b.cgroups_path());
            sleeps.retain(|p| *p != init);
            sleeps.len() == 2
        }),
        "expected the init {init} and two sleeps in the cgroup, found {:?}",
        cgroup_procs("pids", b.cgroups_path())
    );
    let got = || {
        fs::read_to_string(out_dir.join("got"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    rt.run_ok(&["kill", &id, "USR1"]);
    assert!(
        wait_until(SETTLE, || got() == 1),
        "the init did not get USR1"
    );
    std::thread::sleep(Duration::from_millis(200));
    for pid in &sleeps {
        assert!(pid_alive(*pid), "plain kill reached sleep {pid}");
    }

    rt.run_ok(&["kill", "--all", &id, "USR1"]);
    for pid in &sleeps {
        assert!(
            wait_until(SETTLE, || !pid_alive(*pid)),
            "kill --all did not reach sleep {pid}"
        );
    }
    assert!(
        wait_until(SETTLE, || got() == 2),
        "kill --all did not reach the init (got {} USR1)",
        got()
    );
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
    rt.run_ok(&["kill", "--all", &id, "KILL"]);
    rt.wait_status(&id, "stopped", SETTLE);
    assert!(wait_until(SETTLE, || !pid_alive(init)));
}

#[test]
fn kill_all_signals_every_process_in_a_pid_namespace() {
    kill_all_reaches_every_process(true);
}

#[test]
fn kill_all_signals_every_process_without_a_pid_namespace() {
    kill_all_reaches_every_process(false);
}

#[test]
fn twenty_containers_created_and_started_concurrently() {
    const N: usize = 20;
    let rt = Runtime::new();
    let mut containers = Vec::new();
    for _ in 0..N {
        let mut b = Bundle::new(&rt);
        b.args(&["sleep", "1000"]);
        let id = rt.new_id("many");
        containers.push((b, id));
    }
    let timeout = Duration::from_secs(120);
    let threads: Vec<_> = containers
        .iter()
        .map(|(b, id)| {
            let create = rt
                .command(&["create", "--bundle", b.dir_str(), id])
                .timeout(timeout);
            let start = rt.command(&["start", id]).timeout(timeout);
            std::thread::spawn(move || {
                let created = create.output();
                if !created.success() {
                    return created;
                }
                start.output()
            })
        })
        .collect();
    let outs: Vec<CmdOutput> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for out in &outs {
        assert!(out.success(), "concurrent create/start failed:\n{out}");
    }
    let mut ids = rt.list_ids();
    ids.sort();
    let mut expected: Vec<String> = containers.iter().map(|(_, id)| id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected, "list after the concurrent starts");
    let mut pids = Vec::new();
    for (b, id) in &containers {
        assert_eq!(rt.status(id).as_deref(), Some("running"), "{id}");
        let init = rt.pid(id);
        assert!(
            cgroup_procs("pids", b.cgroups_path()).contains(&init),
            "{id}: init {init} not in its own cgroup"
        );
        pids.extend(cgroup_procs("pids", b.cgroups_path()));
    }
    assert_eq!(
        pids.len(),
        N,
        "processes in the containers' cgroups: {pids:?}"
    );

    let threads: Vec<_> = containers
        .iter()
        .map(|(_, id)| {
            let delete = rt.command(&["delete", "--force", id]).timeout(timeout);
            std::thread::spawn(move || delete.output())
        })
        .collect();
    let outs: Vec<CmdOutput> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for out in &outs {
        assert!(out.success(), "concurrent delete --force failed:\n{out}");
    }
    for ((b, id), out) in containers.iter().zip(&outs) {
        rt.assert_nothing_left(b, id, out);
    }
    for pid in &pids {
        assert!(
            wait_until(SETTLE, || !pid_alive(*pid)),
            "process {pid} survived delete --force"
        );
    }
    assert!(
        rt.list_ids().is_empty(),
        "containers left: {:?}",
        rt.list_ids()
    );
}
