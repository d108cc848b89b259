//! Namespaces: new ones from the config, joined ones by path, user namespace mappings.

use std::fs;
use std::os::unix::fs::MetadataExt;

use kapsel_integration_tests::host::ns_of;
use kapsel_integration_tests::{
    host_ok, kapsel_only, proc_status_field, wait_until, Bundle, Netns, Runtime, SETTLE,
};
use serde_json::json;

/// Run the bundle in the foreground and return its stdout (asserting exit 0).
fn run_stdout(rt: &Runtime, b: &Bundle, tag: &str) -> String {
    let id = rt.new_id(tag);
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.success(), "run failed:\n{out}");
    out.stdout
}

#[test]
fn hostname_comes_from_the_config() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.hostname("kt-box").args(&["hostname"]);
    assert_eq!(run_stdout(&rt, &b, "hostname"), "kt-box\n");
}

#[test]
fn process_is_pid_1_of_a_new_pid_namespace() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("echo $$; ps -o pid,comm | tail -n +2 | wc -l");
    let out = run_stdout(&rt, &b, "pid1");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"1"), "pid inside: {out:?}");
    // ps sees only the container's processes: sh, ps, tail, wc (sh may fork subshells).
    let count: usize = lines[1].trim().parse().unwrap();
    assert!(count <= 5, "the container sees {count} processes: {out:?}");
}

#[test]
fn new_network_namespace_has_only_lo() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    // /proc/net/dev lists the interfaces of the reader's network namespace.
    b.sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    assert_eq!(run_stdout(&rt, &b, "netns"), "lo\n");
}

#[test]
fn namespaces_differ_from_the_hosts() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let types = ["pid", "net", "ipc", "uts", "mnt"];
    let script: Vec<String> = types
        .iter()
        .map(|t| format!("readlink /proc/self/ns/{t}"))
        .collect();
    b.sh(&script.join("; "));
    let out = run_stdout(&rt, &b, "ns-differ");
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), types.len(), "{out:?}");
    for (t, inner) in types.iter().zip(&inside) {
        let host = ns_of("self", t);
        assert_ne!(*inner, host, "{t} namespace is the host's");
        assert!(inner.starts_with(&format!("{t}:[")), "{inner}");
    }
}

#[test]
fn without_a_uts_namespace_the_hostname_is_the_hosts() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.remove_namespace("uts")
        .edit(|c| {
            c.as_object_mut().unwrap().remove("hostname");
        })
        .sh("hostname; readlink /proc/self/ns/uts");
    let out = run_stdout(&rt, &b, "no-uts");
    let host_name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], host_name.trim(), "{out:?}");
    assert_eq!(lines[1], ns_of("self", "uts"), "{out:?}");
}

/// A SysV message queue on the host, removed on drop.
struct HostQueue(String);

impl Drop for HostQueue {
    fn drop(&mut self) {
        let _ = kapsel_integration_tests::host("ipcrm", &["-q", &self.0]);
    }
}

#[test]
fn ipc_namespace_is_private() {
    // A SysV message queue made on the host is invisible inside.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["cat", "/proc/sysvipc/msg"]);
    // "Message queue id: N"
    let made = host_ok("ipcmk", &["-Q"]).stdout;
    let queue = HostQueue(made.rsplit(':').next().unwrap().trim().to_string());
    let host_view = fs::read_to_string("/proc/sysvipc/msg").unwrap();
    let out = run_stdout(&rt, &b, "ipc");
    drop(queue);
    assert!(
        host_view.lines().count() > 1,
        "the host queue is not listed: {host_view}"
    );
    assert_eq!(out.lines().count(), 1, "queues visible inside: {out:?}");
}

#[test]
fn joins_an_existing_network_namespace_by_path() {
    let rt = Runtime::new();
    let ns = Netns::new("join");
    // No dummy driver in this kernel; a veth pair inside the netns does as well.
    host_ok(
        "ip",
        &[
            "-n",
            ns.name(),
            "link",
            "add",
            "d0",
            "type",
            "veth",
            "peer",
            "name",
            "d1",
        ],
    );
    let mut b = Bundle::new(&rt);
    b.namespace("network", Some(&ns.path())).sh(
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort; readlink /proc/self/ns/net",
    );
    let out = run_stdout(&rt, &b, "join-net");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["d0", "d1", "lo"], "interfaces inside: {out:?}");
    let inode = fs::metadata(ns.path()).unwrap().ino();
    assert_eq!(lines[3], format!("net:[{inode}]"), "not the netns we made");
    // The runtime must leave a joined namespace alone.
    assert!(fs::metadata(ns.path()).is_ok());
    let links = host_ok("ip", &["-n", ns.name(), "-o", "link"]).stdout;
    assert!(links.contains("d0"), "d0 gone from the netns: {links}");
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    b.namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .bind(&out_dir, "/var", &[])
        .sh(
            "id -u > /var/id; id -g >> /var/id; cat /proc/self/uid_map >> /var/id; exec sleep 1000",
        );
    let id = rt.new_id("userns");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let pid = rt.pid(&id);
    assert!(
        wait_until(SETTLE, || fs::read_to_string(out_dir.join("id"))
            .is_ok_and(|s| s.lines().count() >= 3)),
        "the container did not write its ids"
    );
    let ids = fs::read_to_string(out_dir.join("id")).unwrap();
    let lines: Vec<&str> = ids.lines().collect();
    assert_eq!(lines[0], "0", "uid inside: {ids:?}");
    assert_eq!(lines[1], "0", "gid inside: {ids:?}");
    let map: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "uid_map inside: {ids:?}");
    // The host sees the mapped ids.
    let uid = proc_status_field(pid, "Uid").unwrap();
    let gid = proc_status_field(pid, "Gid").unwrap();
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["100000"; 4],
        "host Uid"
    );
    assert_eq!(
        gid.split_whitespace().collect::<Vec<_>>(),
        ["100000"; 4],
        "host Gid"
    );
    assert_ne!(ns_of(&pid.to_string(), "user"), ns_of("self", "user"));
    // The file it wrote through the bind mount belongs to the mapped uid.
    assert_eq!(fs::metadata(out_dir.join("id")).unwrap().uid(), 100000);
}

/// The first field of a /proc/uptime text: seconds since boot (CLOCK_BOOTTIME).
#[track_caller]
fn uptime_secs(text: &str) -> f64 {
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("not a /proc/uptime line: {text:?}"))
}

#[test]
fn kapsel_time_namespace_applies_the_offsets() {
    // runc 1.1.5 rejects `{"type": "time"}` ("namespace {\"time\" \"\"} does not exist").
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.namespace("time", None)
        .set(
            "/linux/timeOffsets",
            json!({
                "monotonic": {"secs": 86400, "nanosecs": 0},
                "boottime": {"secs": 172800, "nanosecs": 0},
            }),
        )
        .sh("cat /proc/uptime; cat /proc/self/timens_offsets; readlink /proc/self/ns/time");
    let before = uptime_secs(&fs::read_to_string("/proc/uptime").unwrap());
    let out = run_stdout(&rt, &b, "timens");
    let after = uptime_secs(&fs::read_to_string("/proc/uptime").unwrap());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    // /proc/uptime follows CLOCK_BOOTTIME, shifted by the boottime offset (2 days).
    let inside = uptime_secs(lines[0]);
    assert!(
        inside >= before + 172800.0 - 1.0 && inside <= after + 172800.0 + 1.0,
        "uptime inside {inside} is not the host's ({before}..{after}) + 172800 s:\n{out}"
    );
    let offsets: Vec<Vec<&str>> = lines[1..3]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        offsets.contains(&vec!["monotonic", "86400", "0"]),
        "timens_offsets inside:\n{out}"
    );
    assert!(
        offsets.contains(&vec!["boottime", "172800", "0"]),
        "timens_offsets inside:\n{out}"
    );
    assert!(lines[3].starts_with("time:["), "{out:?}");
    assert_ne!(
        lines[3],
        ns_of("self", "time"),
        "time namespace is the host's"
    );
}

#[test]
fn kapsel_domainname_comes_from_the_config() {
    // runc 1.1.5 ignores `domainname` (the container reads "(none)").
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let host_before = fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let mut b = Bundle::new(&rt);
    b.set("/domainname", json!("kt.example"))
        .sh("cat /proc/sys/kernel/domainname; readlink /proc/self/ns/uts");
    let out = run_stdout(&rt, &b, "domainname");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"kt.example"), "{out:?}");
    assert_ne!(lines.get(1).copied(), Some(ns_of("self", "uts").as_str()));
    let host_after = fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    assert_eq!(host_after, host_before, "the host's domainname changed");
}
