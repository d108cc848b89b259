//! cgroups (v1 on this machine): limits from the spec, seen from inside and
//! from the host; pids limits enforced; pause/resume; update; events; ps.

use std::fs;
use std::time::Duration;

use kapsel_integration_tests::host::{cgroup_dirs_present, cgroup_procs, read_cgroup_file};
use kapsel_integration_tests::{pid_alive, wait_until, Bundle, CmdOutput, Runtime, SETTLE};
use serde_json::{json, Value};

fn run(rt: &Runtime, b: &Bundle, tag: &str) -> CmdOutput {
    let id = rt.new_id(tag);
    rt.cmd(&["run", "--bundle", b.dir_str(), &id])
}

/// A detached container running `sleep 1000`; returns its id.
fn start_sleeper(rt: &Runtime, b: &mut Bundle, tag: &str) -> String {
    b.args(&["sleep", "1000"]);
    let id = rt.new_id(tag);
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    id
}

#[test]
fn memory_limit_inside_and_on_the_host() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/linux/resources/memory", json!({"limit": 67108864}))
        .args(&["sleep", "1000"]);
    let id = rt.new_id("mem");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    // Checked at create already: the limit holds before the process runs.
    assert_eq!(
        read_cgroup_file("memory", b.cgroups_path(), "memory.limit_in_bytes"),
        "67108864"
    );
    rt.run_ok(&["delete", "-f", &id]);

    b.sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes");
    let out = run(&rt, &b, "mem-in");
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.trim(), "67108864", "limit seen inside:\n{out}");
}

#[test]
fn pids_cpu_and_cpuset_limits() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/linux/resources/pids", json!({"limit": 20})).set(
        "/linux/resources/cpu",
        json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}),
    );
    let id = start_sleeper(&rt, &mut b, "limits");
    let cg = b.cgroups_path();
    assert_eq!(read_cgroup_file("pids", cg, "pids.max"), "20");
    assert_eq!(read_cgroup_file("cpu", cg, "cpu.shares"), "512");
    assert_eq!(read_cgroup_file("cpu", cg, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read_cgroup_file("cpu", cg, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cgroup_file("cpuset", cg, "cpuset.cpus"), "0");
    assert_eq!(read_cgroup_file("cpuset", cg, "cpuset.mems"), "0");
    let pid = rt.pid(&id);
    assert_eq!(
        kapsel_integration_tests::proc_status_field(pid, "Cpus_allowed_list").as_deref(),
        Some("0")
    );
    // The same values through the container's own /sys/fs/cgroup.
    let out = rt.run_ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpuset/cpuset.cpus",
    ]);
    assert_eq!(out.stdout, "20\n512\n0\n", "{out}");
}

#[test]
fn init_is_in_every_hierarchy() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let id = start_sleeper(&rt, &mut b, "cg-member");
    let pid = rt.pid(&id);
    let dirs = cgroup_dirs_present(b.cgroups_path());
    let hierarchies = kapsel_integration_tests::host::cgroup_v1_hierarchies();
    for h in [
        "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio",
    ] {
        assert!(hierarchies.iter().any(|x| x == h), "host lacks {h}");
        assert!(
            cgroup_procs(h, b.cgroups_path()).contains(&pid),
            "init {pid} not in the {h} cgroup (present: {dirs:?})"
        );
    }
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in own
        .lines()
        .filter(|l| l.contains(":memory:") || l.contains(":pids:"))
    {
        assert!(
            line.ends_with(b.cgroups_path()),
            "/proc/{pid}/cgroup: {own}"
        );
    }
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    // 30 sleeps through xargs -P (busybox sh itself gives up at the first failed fork).
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    b.set("/linux/resources/pids", json!({"limit": 10}))
        .bind(&out_dir, "/var", &[])
        .sh("seq 30 | xargs -n1 -P30 sleep 2>/var/err; echo done > /var/done; exec sleep 1000");
    let id = rt.new_id("forkbomb");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let err = || fs::read_to_string(out_dir.join("err")).unwrap_or_default();
    assert!(
        wait_until(SETTLE, || err()
            .contains("Resource temporarily unavailable")),
        "no fork failed with pids.max 10 (xargs stderr: {:?})",
        err()
    );
    let cg = b.cgroups_path();
    let current: usize = read_cgroup_file("pids", cg, "pids.current")
        .parse()
        .unwrap();
    assert!(current <= 10, "pids.current {current} above pids.max 10");
    let procs = cgroup_procs("pids", cg);
    assert!(procs.len() <= 10, "{} processes in the cgroup", procs.len());
    let events = read_cgroup_file("pids", cg, "pids.events");
    let max_hits: u64 = events
        .strip_prefix("max ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(max_hits >= 1, "pids.events: {events}");
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
}

#[test]
fn device_cgroup_denies_by_default_and_allows_the_standard_devices() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let id = start_sleeper(&rt, &mut b, "devices");
    let list = read_cgroup_file("devices", b.cgroups_path(), "devices.list");
    let rules: Vec<&str> = list.lines().collect();
    assert!(!rules.contains(&"a *:* rwm"), "everything allowed:\n{list}");
    for dev in [
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
    ] {
        assert!(rules.contains(&dev), "{dev} not allowed:\n{list}");
    }
    // A device node outside the list cannot be opened even by root with CAP_MKNOD.
    let out = rt.cmd(&[
        "exec",
        "--cap",
        "CAP_MKNOD",
        &id,
        "sh",
        "-c",
        "mknod /dev/kt-mem c 1 1 && echo made && head -c1 /dev/kt-mem",
    ]);
    assert!(!out.success(), "read /dev/mem through a new node:\n{out}");
    // The node was made (mknod is allowed) and the open refused by the device rules, not by
    // anything else on the way.
    assert!(out.stdout.contains("made"), "mknod failed:\n{out}");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "not refused by the device rules:\n{out}"
    );
}

#[test]
fn devices_are_denied_by_default_without_linux_resources() {
    // runc applies its default device rules (deny all, then the standard devices) also when
    // config.json has no linux.resources at all.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.edit(|v| {
        v["linux"].as_object_mut().unwrap().remove("resources");
    });
    let id = start_sleeper(&rt, &mut b, "devices-nores");
    let list = read_cgroup_file("devices", b.cgroups_path(), "devices.list");
    let rules: Vec<&str> = list.lines().collect();
    assert!(!rules.contains(&"a *:* rwm"), "everything allowed:\n{list}");
    assert!(
        rules.contains(&"c 1:3 rwm"),
        "/dev/null not allowed:\n{list}"
    );
    let out = rt.cmd(&[
        "exec",
        "--cap",
        "CAP_MKNOD",
        &id,
        "sh",
        "-c",
        "mknod /dev/kt-mem c 1 1 && echo made && head -c1 /dev/kt-mem",
    ]);
    assert!(!out.success(), "read /dev/mem through a new node:\n{out}");
    // The node was made (mknod is allowed) and the open refused by the device rules, not by
    // anything else on the way.
    assert!(out.stdout.contains("made"), "mknod failed:\n{out}");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "not refused by the device rules:\n{out}"
    );
    rt.run_ok(&["exec", &id, "sh", "-c", "echo x > /dev/null"]);
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    b.bind(&out_dir, "/var", &[])
        .sh("i=0; while true; do i=$((i+1)); echo $i > /var/tick; usleep 20000; done");
    let id = rt.new_id("pause");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let tick = || fs::read_to_string(out_dir.join("tick")).unwrap_or_default();
    assert!(
        wait_until(SETTLE, || !tick().is_empty()),
        "the loop did not start"
    );

    rt.run_ok(&["pause", &id]);
    assert_eq!(rt.status(&id).as_deref(), Some("paused"));
    assert_eq!(
        read_cgroup_file("freezer", b.cgroups_path(), "freezer.state"),
        "FROZEN"
    );
    let frozen_at = tick();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tick(), frozen_at, "the container kept running while paused");
    // Pausing twice is an error (runc: "container not running").
    rt.run_err(&["pause", &id]);

    rt.run_ok(&["resume", &id]);
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
    assert_eq!(
        read_cgroup_file("freezer", b.cgroups_path(), "freezer.state"),
        "THAWED"
    );
    assert!(
        wait_until(SETTLE, || tick() != frozen_at),
        "the container did not go on after resume"
    );
    rt.run_err(&["resume", &id]);
}

#[test]
fn pause_of_a_stopped_container_fails() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["true"]);
    let id = rt.new_id("pause-stopped");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    rt.wait_status(&id, "stopped", SETTLE);
    rt.run_err(&["pause", &id]);
    rt.run_err(&["resume", &id]);
    assert_eq!(rt.status(&id).as_deref(), Some("stopped"));
}

#[test]
fn delete_force_of_a_paused_container() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let id = start_sleeper(&rt, &mut b, "del-paused");
    let pid = rt.pid(&id);
    rt.run_ok(&["pause", &id]);
    rt.run_ok(&["delete", "--force", &id]);
    assert!(
        wait_until(SETTLE, || !pid_alive(pid)),
        "frozen init survived"
    );
    assert!(rt.list_ids().is_empty());
    assert!(
        wait_until(SETTLE, || cgroup_dirs_present(b.cgroups_path()).is_empty()),
        "cgroups left: {:?}",
        cgroup_dirs_present(b.cgroups_path())
    );
}

#[test]
fn update_memory_from_flags() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/linux/resources/memory", json!({"limit": 67108864}));
    let id = start_sleeper(&rt, &mut b, "upd-mem");
    rt.run_ok(&["update", "--memory", "32m", &id]);
    assert_eq!(
        read_cgroup_file("memory", b.cgroups_path(), "memory.limit_in_bytes"),
        "33554432"
    );
    // runc 1.1 spells it --cpu-share (no s).
    rt.run_ok(&["update", "--cpu-share", "256", "--pids-limit", "30", &id]);
    assert_eq!(
        read_cgroup_file("cpu", b.cgroups_path(), "cpu.shares"),
        "256"
    );
    assert_eq!(read_cgroup_file("pids", b.cgroups_path(), "pids.max"), "30");
    // An update of other resources leaves the memory limit alone.
    assert_eq!(
        read_cgroup_file("memory", b.cgroups_path(), "memory.limit_in_bytes"),
        "33554432"
    );
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
}

#[test]
fn update_resources_from_stdin() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/linux/resources/pids", json!({"limit": 20}));
    let id = start_sleeper(&rt, &mut b, "upd-stdin");
    rt.command(&["update", "-r", "-", &id])
        .stdin(r#"{"pids": {"limit": 50}, "cpu": {"shares": 768}}"#)
        .ok();
    assert_eq!(read_cgroup_file("pids", b.cgroups_path(), "pids.max"), "50");
    assert_eq!(
        read_cgroup_file("cpu", b.cgroups_path(), "cpu.shares"),
        "768"
    );
    // And from a file.
    let file = b.path().join("resources.json");
    fs::write(&file, r#"{"memory": {"limit": 41943040}}"#).unwrap();
    rt.run_ok(&["update", "-r", file.to_str().unwrap(), &id]);
    assert_eq!(
        read_cgroup_file("memory", b.cgroups_path(), "memory.limit_in_bytes"),
        "41943040"
    );
}

#[test]
fn update_with_bad_json_fails_and_changes_nothing() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/linux/resources/pids", json!({"limit": 20}));
    let id = start_sleeper(&rt, &mut b, "upd-bad");
    let out = rt
        .command(&["update", "-r", "-", &id])
        .stdin("{not json")
        .output();
    assert!(out.code.is_some_and(|c| c != 0), "{out}");
    assert_eq!(read_cgroup_file("pids", b.cgroups_path(), "pids.max"), "20");
}

#[test]
fn events_stats_prints_one_json_line() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let id = start_sleeper(&rt, &mut b, "events");
    let out = rt.run_ok(&["events", "--stats", &id]);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "events --stats printed:\n{out}");
    let v: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!(v["type"], "stats", "{v}");
    assert_eq!(v["id"], id.as_str(), "{v}");
    let usage = v["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    assert!(usage > 0, "memory usage not > 0: {v}");
    let pids = v["data"]["pids"]["current"].as_u64().unwrap_or(0);
    assert!(pids >= 1, "pids.current not >= 1: {v}");
    assert!(
        v["data"]["cpu"]["usage"]["total"].as_u64().is_some(),
        "no cpu usage: {v}"
    );
}

#[test]
fn ps_lists_the_container_processes() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let id = start_sleeper(&rt, &mut b, "ps");
    let pid = rt.pid(&id);
    let out = rt.run_ok(&["ps", "-f", "json", &id]);
    let pids: Vec<i64> = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("ps -f json is not a JSON list of pids ({e}):\n{out}"));
    assert_eq!(pids, [pid as i64], "{out}");

    let table = rt.run_ok(&["ps", &id]).stdout;
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.contains("PID") && header.contains("CMD"), "{table}");
    let pid_col = header.split_whitespace().position(|c| c == "PID").unwrap();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert_eq!(
        rows[0].split_whitespace().nth(pid_col),
        Some(pid.to_string().as_str())
    );
    assert!(rows[0].ends_with("sleep 1000"), "{table}");

    // An exec'd process shows up too.
    rt.run_ok(&["exec", "-d", &id, "sleep", "999"]);
    let mut pids: Vec<i64> = Vec::new();
    assert!(wait_until(SETTLE, || {
        pids = serde_json::from_str(rt.run_ok(&["ps", "-f", "json", &id]).stdout.trim())
            .unwrap_or_default();
        pids.len() == 2
    }));
    assert!(pids.contains(&(pid as i64)));
}
