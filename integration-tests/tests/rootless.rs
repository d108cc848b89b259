//! Rootless containers and user namespaces.
//!
//! Rootless: the tests (root) create a system user `kapsel-rl-<pid>-<n>` with subordinate ids,
//! and drive the runtime as that user through `setpriv` ([`Runtime::as_user`]), with `--root`
//! and the bundle ([`Bundle::rootless`], from `spec --rootless` run as the user) owned by it.
//! This host has cgroup v1 without delegation: a rootless container gets no cgroup, and a
//! config that needs one fails.
//!
//! Root with a user namespace of several id ranges: file ownership seen inside, and /sys and
//! /dev as runc sets them up in a user namespace.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use kapsel_integration_tests::user::{SUBID_COUNT, SUBID_START};
use kapsel_integration_tests::{
    host_ok, kapsel_only, proc_status_field, require_program, wait_until, Bundle, Runtime,
    TestUser, SETTLE,
};
use serde_json::{json, Value};

/// Can unprivileged users make user namespaces here? A clear failure if not.
#[track_caller]
fn require_unprivileged_userns(user: &TestUser) {
    require_program("unshare", "util-linux");
    let out = user.cmd("unshare", &["-Ur", "id", "-u"]).output();
    assert!(
        out.success() && out.stdout.trim() == "0",
        "unprivileged user namespaces do not work on this kernel (`unshare -Ur` as {}); \
         check user.max_user_namespaces and kernel.unprivileged_userns_clone:\n{out}",
        user.name()
    );
}

/// A user, a runtime run as it, and a rootless bundle of its own.
fn rootless_setup() -> (TestUser, Runtime, Bundle) {
    let user = TestUser::new();
    require_unprivileged_userns(&user);
    let rt = Runtime::as_user(&user);
    let b = Bundle::rootless(&rt, &user);
    (user, rt, b)
}

/// The four values of a `Uid:`/`Gid:` line of /proc/PID/status.
fn ids(pid: i32, field: &str) -> Vec<u32> {
    proc_status_field(pid, field)
        .unwrap_or_else(|| panic!("no {field} for pid {pid}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// The cgroup directories a container named `id` would get without `linux.cgroupsPath`:
/// `<hierarchy's mount point>/<this process's cgroup>/<id>` (the runtime starts in ours), those
/// that exist. Mount points come from mountinfo, so this holds for hybrid, pure v1 and pure v2
/// hosts alike (a v1 line `4:cpu,cpuacct:/x` is found where its superblock's options name
/// those controllers; the v2 line `0::/x` where the cgroup2 filesystem is mounted).
fn default_cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    // (fstype, mount point, controllers named in the super options)
    let mounts: Vec<(String, PathBuf, Vec<String>)> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = *fields.get(dash + 1)?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let opts = fields.get(dash + 3).copied().unwrap_or("");
            let names = opts.split(',').map(str::to_string).collect();
            Some((fstype.to_string(), PathBuf::from(fields[4]), names))
        })
        .collect();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut out = Vec::new();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let mount = mounts.iter().find(|(fstype, _, opts)| {
            if wanted.is_empty() {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && wanted.iter().all(|w| opts.iter().any(|o| o == w))
            }
        });
        if let Some((_, point, _)) = mount {
            let dir = point.join(path.trim_start_matches('/')).join(id);
            if dir.is_dir() {
                out.push(dir);
            }
        }
    }
    out
}

/// Sorted lines of /proc/PID/cgroup.
fn cgroup_lines(pid: &str) -> Vec<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

// ---------------------------------------------------------------------------
// Rootless: an unprivileged user runs containers.
// ---------------------------------------------------------------------------

#[test]
fn rootless_spec_maps_the_users_own_ids_to_root() {
    let (user, _rt, b) = rootless_setup();
    let c = b.config();
    let types: Vec<&str> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"user"), "no user namespace: {types:?}");
    // The host's network namespace belongs to the initial user namespace: a rootless
    // container shares it (a new one would have no connectivity anyway).
    assert!(
        !types.contains(&"network"),
        "a rootless spec has a network namespace: {types:?}"
    );
    assert_eq!(
        c["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": user.uid(), "size": 1}])
    );
    assert_eq!(
        c["linux"]["gidMappings"],
        json!([{"containerID": 0, "hostID": user.gid(), "size": 1}])
    );
    assert!(
        c["linux"]["resources"].is_null(),
        "a rootless spec asks for cgroup settings it cannot have: {}",
        c["linux"]["resources"]
    );
    // sysfs cannot be mounted without a network namespace of one's own: /sys is a bind.
    let sys = c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys")
        .expect("a /sys mount");
    let opts: Vec<&str> = sys["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        sys["source"] == "/sys" && opts.contains(&"rbind") && opts.contains(&"ro"),
        "/sys mount: {sys}"
    );
}

#[test]
fn rootless_create_start_state_exec_kill_delete() {
    let (user, rt, mut b) = rootless_setup();
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("rl-life");
    rt.run_ok(&["create", "--bundle", b.dir_str(), &id]);
    assert_eq!(rt.status(&id).as_deref(), Some("created"));
    // The state lives under the user's --root, owned by the user.
    let state_dir = rt.root().join(&id);
    assert_eq!(
        fs::metadata(&state_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", state_dir.display()))
            .uid(),
        user.uid(),
        "state directory {} not owned by the user",
        state_dir.display()
    );
    rt.run_ok(&["start", &id]);
    rt.wait_status(&id, "running", SETTLE);
    let pid = rt.pid(&id);
    // Root inside, the user outside.
    assert_eq!(ids(pid, "Uid"), [user.uid(); 4], "host Uid of the init");
    assert_eq!(ids(pid, "Gid"), [user.gid(); 4], "host Gid of the init");
    // No cgroup of its own: the init stays in the cgroups it was started in (ours).
    assert_eq!(
        cgroup_lines(&pid.to_string()),
        cgroup_lines("self"),
        "the rootless container moved to other cgroups"
    );
    assert!(default_cgroup_dirs(&id).is_empty());

    let out = rt.run_ok(&["exec", &id, "id", "-u"]);
    assert_eq!(out.stdout.trim(), "0", "id -u inside:\n{out}");
    let out = rt.run_ok(&["exec", &id, "cat", "/proc/self/uid_map"]);
    let map: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(map, ["0", &user.uid().to_string(), "1"], "uid_map:\n{out}");
    // The rootfs the user owns is root's inside.
    let out = rt.run_ok(&["exec", &id, "stat", "-c", "%u:%g", "/bin/busybox"]);
    assert_eq!(
        out.stdout.trim(),
        "0:0",
        "owner of /bin/busybox inside:\n{out}"
    );
    let out = rt.cmd(&["exec", &id, "sh", "-c", "exit 7"]);
    assert_eq!(out.code, Some(7), "exec exit code:\n{out}");
    // An exec'd process is the user on the host too.
    let pid_file = user.home().join("exec.pid");
    rt.run_ok(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let exec_pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        ids(exec_pid, "Uid"),
        [user.uid(); 4],
        "host Uid of the exec"
    );

    // ps lists both, although there is no cgroup to read them from (runc 1.1 fails here).
    if rt.is_kapsel() {
        let out = rt.run_ok(&["ps", "--format", "json", &id]);
        let mut pids: Vec<i32> = serde_json::from_str(&out.stdout).unwrap();
        pids.sort_unstable();
        let mut want = [pid, exec_pid];
        want.sort_unstable();
        assert_eq!(pids, want, "ps:\n{out}");
    }

    rt.run_ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped", SETTLE);
    rt.run_ok(&["delete", &id]);
    assert!(rt.status(&id).is_none(), "{id} still has a state");
    assert!(
        !rt.root_mentions(&id),
        "left under --root: {:?}",
        rt.root_entries()
    );
    let mut left = Vec::new();
    let gone = wait_until(SETTLE, || {
        left = user.processes();
        left.is_empty()
    });
    assert!(
        gone,
        "processes of {} left after delete: {left:?}",
        user.name()
    );
}

#[test]
fn rootless_run_in_the_foreground_passes_the_exit_code_through() {
    let (_user, rt, mut b) = rootless_setup();
    b.sh("id -u; id -g; exit 42");
    let id = rt.new_id("rl-run");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert_eq!(out.code, Some(42), "exit code:\n{out}");
    assert_eq!(out.stdout, "0\n0\n", "ids inside:\n{out}");
    // run deletes the container when it exits.
    assert!(rt.status(&id).is_none(), "{id} still has a state:\n{out}");
}

#[test]
fn rootless_subordinate_ranges_go_through_newuidmap() {
    require_program("newuidmap", "uidmap");
    let (user, rt, mut b) = rootless_setup();
    let maps = |own: u32| {
        json!([
            {"containerID": 0, "hostID": own, "size": 1},
            {"containerID": 1, "hostID": SUBID_START, "size": SUBID_COUNT},
        ])
    };
    b.set("/linux/uidMappings", maps(user.uid()))
        .set("/linux/gidMappings", maps(user.gid()))
        .args(&["sleep", "1000"]);
    let id = rt.new_id("rl-subid");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let out = rt.run_ok(&[
        "exec",
        &id,
        "cat",
        "/proc/self/uid_map",
        "/proc/self/gid_map",
    ]);
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (uid, gid, start, count) = (
        user.uid().to_string(),
        user.gid().to_string(),
        SUBID_START.to_string(),
        SUBID_COUNT.to_string(),
    );
    assert_eq!(
        rows,
        [
            vec!["0", &uid, "1"],
            vec!["1", &start, &count],
            vec!["0", &gid, "1"],
            vec!["1", &start, &count],
        ],
        "maps inside:\n{out}"
    );
    // uid 1000 inside is subordinate id 1000-1 on the host.
    let pid_file = user.home().join("exec.pid");
    rt.run_ok(&[
        "exec",
        "-d",
        "--user",
        "1000:1000",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        ids(pid, "Uid"),
        [SUBID_START + 999; 4],
        "host Uid of uid 1000"
    );
    assert_eq!(
        ids(pid, "Gid"),
        [SUBID_START + 999; 4],
        "host Gid of gid 1000"
    );
    // Ranges that are not the user's in /etc/subuid are refused, and nothing is left.
    let mut bad = Bundle::rootless(&rt, &user);
    bad.set(
        "/linux/uidMappings",
        json!([
            {"containerID": 0, "hostID": user.uid(), "size": 1},
            {"containerID": 1, "hostID": SUBID_START + SUBID_COUNT, "size": 10},
        ]),
    );
    let bad_id = rt.new_id("rl-subid-bad");
    rt.create_must_fail(&bad, &bad_id, &[]);
}

#[test]
fn rootless_without_limits_runs_without_a_cgroup() {
    let (_user, rt, mut b) = rootless_setup();
    // Device rules alone are not limits: the user namespace forbids mknod anyway.
    b.set(
        "/linux/resources",
        json!({"devices": [{"allow": false, "access": "rwm"}]}),
    )
    .sh("cat /proc/self/cgroup");
    let id = rt.new_id("rl-nocg");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.success(), "run failed:\n{out}");
    assert!(default_cgroup_dirs(&id).is_empty());
}

#[test]
fn rootless_state_defaults_to_xdg_runtime_dir_without_root_flag() {
    let (user, rt, mut b) = rootless_setup();
    b.args(&["sleep", "1000"]);
    let xdg = user.home().join("run");
    fs::create_dir(&xdg).unwrap();
    user.chown(&xdg);
    let id = rt.new_id("rl-xdg");
    // `env NAME=VALUE PROGRAM...` after the user prefix: XDG_RUNTIME_DIR set, no --root.
    let as_user = |args: &[&str]| {
        user.cmd(format!("XDG_RUNTIME_DIR={}", xdg.display()), &[])
            .arg(rt.bin())
            .args(args)
            .output()
    };
    struct Delete<'a>(
        &'a dyn Fn(&[&str]) -> kapsel_integration_tests::CmdOutput,
        &'a str,
    );
    impl Drop for Delete<'_> {
        fn drop(&mut self) {
            (self.0)(&["delete", "--force", self.1]);
        }
    }
    let out = as_user(&["run", "-d", "--bundle", b.dir_str(), &id]);
    assert!(out.success(), "run -d without --root failed:\n{out}");
    let _delete = Delete(&as_user, &id);
    // The state is in a directory of the runtime's own under XDG_RUNTIME_DIR
    // (kapsel-runtime/ or runc/).
    let state_dirs: Vec<PathBuf> = fs::read_dir(&xdg)
        .unwrap()
        .map(|e| e.unwrap().path().join(&id))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        state_dirs.len(),
        1,
        "no state for {id} under {}",
        xdg.display()
    );
    let out = as_user(&["state", &id]);
    assert!(out.success() && out.stdout.contains("running"), "{out}");
    let out = as_user(&["delete", "--force", &id]);
    assert!(out.success(), "{out}");
    assert!(!state_dirs[0].exists(), "state left after delete");
}

#[test]
fn rootless_pause_and_update_without_a_cgroup_fail_and_leave_it_running() {
    let (_user, rt, mut b) = rootless_setup();
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("rl-noop");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    // Freezing and limits need a cgroup: an error, never a silent success.
    let pause = rt.run_err(&["pause", &id]);
    let update = rt.run_err(&["update", "--memory", "100000000", &id]);
    let pids = rt.run_err(&["update", "--pids-limit", "10", &id]);
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
    if rt.is_kapsel() {
        for (what, err) in [("pause", &pause), ("update", &update), ("update", &pids)] {
            assert!(
                err.contains(&id) && err.contains("no cgroup of its own"),
                "{what} does not say why it failed: {err}"
            );
        }
    }
    rt.run_ok(&["delete", "--force", &id]);
}

/// A rootless config asking for a memory limit on this cgroup v1 host without delegation.
fn limited_bundle() -> (TestUser, Runtime, Bundle) {
    let (user, rt, mut b) = rootless_setup();
    b.set("/linux/resources", json!({"memory": {"limit": 64 << 20}}))
        .args(&["sleep", "1000"]);
    (user, rt, b)
}

#[test]
fn rootless_limits_without_a_cgroup_fail_and_leave_nothing() {
    let (user, rt, b) = limited_bundle();
    let id = rt.new_id("rl-limit");
    rt.create_must_fail(&b, &id, &[]);
    assert!(default_cgroup_dirs(&id).is_empty());
    assert!(
        user.processes().is_empty(),
        "processes of {} left: {:?}",
        user.name(),
        user.processes()
    );
    // run fails the same way.
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.code.is_some_and(|c| c != 0), "run succeeded:\n{out}");
    assert!(!rt.root_mentions(&id), "{:?}", rt.root_entries());
}

#[test]
fn kapsel_rootless_limit_error_names_the_limit_and_says_why() {
    let (_user, rt, mut b) = limited_bundle();
    if !kapsel_only(&rt) {
        return;
    }
    b.set("/linux/resources/pids", json!({"limit": 10}));
    let id = rt.new_id("rl-limit-msg");
    let out = rt.create_must_fail(&b, &id, &[]);
    for needle in [
        "linux.resources.memory.limit",
        "linux.resources.pids.limit",
        "cgroup v1 is not delegated",
        "Permission denied",
        "remove these limits",
    ] {
        assert!(
            out.stderr.contains(needle),
            "the error does not say {needle:?}:\n{out}"
        );
    }
}

#[test]
fn rootless_explicit_cgroups_path_it_cannot_create_is_an_error() {
    // runc refuses an explicit cgroupsPath it cannot create, even without limits; a config
    // that names a cgroup must not run outside it silently.
    let (_user, rt, mut b) = rootless_setup();
    let path = format!("/{}", rt.new_id("rl-cgpath"));
    b.set("/linux/cgroupsPath", json!(path)).args(&["true"]);
    let id = rt.new_id("rl-cgpath");
    let out = rt.create_must_fail(&b, &id, &[]);
    assert!(
        kapsel_integration_tests::host::cgroup_dirs_present(&path).is_empty(),
        "{out}"
    );
    if rt.is_kapsel() {
        assert!(
            out.stderr.contains("linux.cgroupsPath") && out.stderr.contains(&path),
            "the error does not name linux.cgroupsPath {path}:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------
// Root with a user namespace of several id ranges.
// ---------------------------------------------------------------------------

/// Three ranges: 0-999 -> 200000, 1000-1999 -> 300000, 2000-65535 -> 400000.
fn three_ranges() -> Value {
    json!([
        {"containerID": 0, "hostID": 200000, "size": 1000},
        {"containerID": 1000, "hostID": 300000, "size": 1000},
        {"containerID": 2000, "hostID": 400000, "size": 63536},
    ])
}

fn userns_bundle(rt: &Runtime) -> Bundle {
    let mut b = Bundle::new(rt);
    b.namespace("user", None)
        .set("/linux/uidMappings", three_ranges())
        .set("/linux/gidMappings", three_ranges());
    b
}

#[test]
fn several_ranges_map_file_owners_both_ways() {
    let rt = Runtime::new();
    let mut b = userns_bundle(&rt);
    b.private_rootfs();
    let data = b.rootfs().join("data");
    fs::create_dir(&data).unwrap();
    for (name, owner) in [
        ("a", "200000:200000"),
        ("b", "300005:300007"),
        ("c", "400010:400011"),
        ("d", "123:123"),
    ] {
        fs::write(data.join(name), name).unwrap();
        host_ok("chown", &[owner, data.join(name).to_str().unwrap()]);
    }
    let out_dir = b.host_dir("out");
    // The process runs as 1005:2003, in the second and third ranges.
    b.bind(&out_dir, "/tmp", &[])
        .set("/process/user", json!({"uid": 1005, "gid": 2003}))
        .sh("cd /data && stat -c '%n %u %g' a b c d; \
             touch /tmp/r && echo created; \
             cat /proc/self/uid_map");
    let id = rt.new_id("ranges");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.success(), "run failed:\n{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    // Each host owner shows as its inside id; an unmapped one as the overflow id.
    assert_eq!(
        lines[..4],
        ["a 0 0", "b 1005 1007", "c 2010 2011", "d 65534 65534"],
        "owners inside:\n{out}"
    );
    assert_eq!(lines[4], "created", "{out}");
    let map: Vec<Vec<&str>> = lines[5..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        map,
        [
            ["0", "200000", "1000"],
            ["1000", "300000", "1000"],
            ["2000", "400000", "63536"]
        ],
        "{out}"
    );
    // A file made inside by 1005:2003 belongs to the mapped host ids.
    let md = fs::metadata(out_dir.join("r")).unwrap();
    assert_eq!((md.uid(), md.gid()), (300005, 400003));
}

#[test]
fn several_ranges_sys_is_sysfs_and_dev_nodes_are_the_hosts_bound() {
    let rt = Runtime::new();
    let mut b = userns_bundle(&rt);
    // The default spec has a network namespace, owned by the container's user namespace:
    // sysfs can be mounted. Device nodes cannot be created in a user namespace: the host's
    // are bind-mounted.
    b.sh(
        "grep -E ' /sys | /dev/null | /dev/zero ' /proc/self/mountinfo; echo ===; \
         stat -c '%n %i %t:%T' /dev/null /dev/zero; ls /sys/class/net; \
         echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | od -An -tx1",
    );
    let id = rt.new_id("ranges-sysdev");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.success(), "run failed:\n{out}");
    let (mountinfo, rest) = out.stdout.split_once("===\n").unwrap();
    let fstype = |mp: &str| -> String {
        let line = mountinfo
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(mp))
            .unwrap_or_else(|| panic!("no mount on {mp}:\n{out}"));
        let f: Vec<&str> = line.split(' ').collect();
        f[f.iter().position(|x| *x == "-").unwrap() + 1].to_string()
    };
    assert_eq!(fstype("/sys"), "sysfs", "{out}");
    let host_dev = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let host_dev_type = host_dev
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/dev"))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f[f.iter().position(|x| *x == "-").unwrap() + 1].to_string()
        })
        .expect("host /dev mount");
    for dev in ["/dev/null", "/dev/zero"] {
        assert_eq!(
            fstype(dev),
            host_dev_type,
            "{dev} is not a bind of the host's:\n{out}"
        );
    }
    let lines: Vec<&str> = rest.lines().collect();
    let null_ino = fs::metadata("/dev/null").unwrap().ino();
    let zero_ino = fs::metadata("/dev/zero").unwrap().ino();
    assert_eq!(lines[0], format!("/dev/null {null_ino} 1:3"), "{out}");
    assert_eq!(lines[1], format!("/dev/zero {zero_ino} 1:5"), "{out}");
    // Its own network namespace: only lo.
    assert_eq!(lines[2], "lo", "{out}");
    assert_eq!(lines[3], "null-ok", "{out}");
    assert_eq!(lines[4].trim(), "00 00 00 00", "{out}");
}

#[test]
fn kapsel_sysfs_without_an_own_network_namespace_binds_the_hosts_read_only() {
    // runc 1.1 fails here (mounting sysfs in a user namespace whose network namespace belongs
    // to the host is EPERM); later runc versions and kapsel bind the host's /sys instead.
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = userns_bundle(&rt);
    b.remove_namespace("network").sh(
        "grep ' /sys' /proc/self/mountinfo; echo ===; ls /sys/class/net; echo ===; \
         touch /sys/kernel/kt 2>&1; echo 1 > /sys/kernel/mm/ksm/run 2>&1; true",
    );
    let id = rt.new_id("sys-bind");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.success(), "run failed:\n{out}");
    let parts: Vec<&str> = out.stdout.split("===\n").collect();
    let line = parts[0]
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/sys"))
        .unwrap_or_else(|| panic!("no /sys mount:\n{out}"));
    let f: Vec<&str> = line.split(' ').collect();
    let dash = f.iter().position(|x| *x == "-").unwrap();
    assert_eq!(f[dash + 1], "sysfs", "{line}");
    assert!(
        f[5].split(',').any(|o| o == "ro"),
        "/sys is not read-only: {line}"
    );
    // The host's mounts under /sys came along with the recursive bind: every one of them is
    // read-only too, also those the config covers (/sys/fs/cgroup).
    for l in parts[0].lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f[4].starts_with("/sys/") {
            assert!(
                f[5].split(',').any(|o| o == "ro"),
                "{} is writable under the bind of /sys: {l}\n{out}",
                f[4]
            );
        }
    }
    // The host's /sys/fs/cgroup under the container's own.
    assert!(
        parts[0]
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup"))
            .count()
            >= 2,
        "the host's /sys/fs/cgroup did not come along with the bind: {out}"
    );
    // The host's interfaces: the host's sysfs, seen through a bind.
    let mut host_net: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host_net.sort();
    let mut inside: Vec<&str> = parts[1].lines().collect();
    inside.sort();
    assert_eq!(inside, host_net, "{out}");
    assert!(
        parts[2].contains("Read-only file system"),
        "writes to /sys did not fail read-only:\n{out}"
    );
}
