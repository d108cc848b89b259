//! Mounts: /proc, masked and read-only paths, read-only root, tmpfs options,
//! bind mounts, /dev, and mount destinations that try to escape the rootfs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kapsel_integration_tests::{
    host, host_ok, unique, wait_until, Bundle, CmdOutput, Runtime, SETTLE,
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

/// (mount point, fstype, per-mount options, super options) for each line of a mountinfo text.
fn parse_mountinfo(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some((
                f[4].to_string(),
                f.get(dash + 1)?.to_string(),
                f[5].to_string(),
                f.get(dash + 3).unwrap_or(&"").to_string(),
            ))
        })
        .collect()
}

#[test]
fn proc_is_mounted_and_shows_the_container() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    // The shell is pid 1 while its first child runs (busybox sh execs the last command).
    b.sh("cat /proc/1/comm; echo ===; cat /proc/self/mountinfo");
    let out = run_ok(&rt, &b, "proc");
    let (comm, mountinfo) = out.split_once("===\n").unwrap();
    let mounts = parse_mountinfo(mountinfo);
    assert!(
        mounts
            .iter()
            .any(|(mp, fs, _, _)| mp == "/proc" && fs == "proc"),
        "no proc on /proc:\n{mountinfo}"
    );
    // /proc belongs to the container's pid namespace: pid 1 is its own shell.
    assert_eq!(comm.trim(), "sh");
}

#[test]
fn masked_paths_show_nothing() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    // The default spec masks /proc/kcore (absent on some kernels), /proc/timer_list,
    // /proc/keys..., and /sys/firmware.
    b.sh(
        "for f in /proc/kcore /proc/timer_list /proc/keys; do \
           if [ -e $f ]; then \
             if [ -c $f ]; then echo \"$f char $(wc -c < $f)\"; else echo \"$f notchar $(wc -c < $f)\"; fi; \
           else echo \"$f absent\"; fi; \
         done; \
         echo \"firmware $(ls -A /sys/firmware | wc -l)\"",
    );
    let out = run_ok(&rt, &b, "masked");
    for f in ["/proc/kcore", "/proc/timer_list", "/proc/keys"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{f} ")))
            .unwrap();
        if Path::new(f).exists() {
            assert_eq!(line, format!("{f} char 0"), "{f} is not masked:\n{out}");
        } else {
            assert!(
                line == format!("{f} absent") || line == format!("{f} char 0"),
                "{f}: {line}"
            );
        }
    }
    assert!(
        fs::read_dir("/sys/firmware").unwrap().count() > 0,
        "precondition: the host has something in /sys/firmware"
    );
    assert!(
        out.contains("firmware 0\n"),
        "/sys/firmware not masked:\n{out}"
    );
}

#[test]
fn readonly_paths_cannot_be_written() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    // hostname is per-uts-namespace, so even a failing test cannot change the host.
    // (/proc/sysrq-trigger does not exist on this kernel.)
    b.sh("echo kt > /proc/sys/kernel/hostname; echo rc=$?; \
         grep -E ' /proc/(sys|bus|fs|irq) ' /proc/self/mountinfo");
    let out = run(&rt, &b, "ro-paths");
    assert!(out.success(), "{out}");
    let rcs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rc="))
        .collect();
    assert_eq!(rcs, ["rc=1"], "write to /proc/sys:\n{out}");
    assert!(
        out.stderr.contains("Read-only file system"),
        "the write did not fail with EROFS:\n{out}"
    );
    let mounts = parse_mountinfo(&out.stdout);
    for p in ["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"] {
        let m = mounts
            .iter()
            .find(|(mp, ..)| mp == p)
            .unwrap_or_else(|| panic!("{p} is not a mount:\n{out}"));
        assert!(
            m.2.split(',').any(|o| o == "ro"),
            "{p} is not mounted ro: {m:?}"
        );
    }
}

#[test]
fn readonly_root_cannot_be_written() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("touch /kt-file; echo rc=$?; touch /tmp/kt-file; echo rc=$?");
    let out = run(&rt, &b, "ro-root");
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "rc=1\nrc=1\n", "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(!b.rootfs().join("kt-file").exists());
    assert!(!b.rootfs().join("tmp/kt-file").exists());
}

#[test]
fn writable_private_root_can_be_written() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.private_rootfs()
        .writable_root()
        .sh("echo data > /kt-file");
    run_ok(&rt, &b, "rw-root");
    assert_eq!(
        fs::read_to_string(b.rootfs().join("kt-file")).unwrap(),
        "data\n"
    );
}

#[test]
fn tmpfs_mount_with_size_and_mode() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    // On an existing directory runc gives the tmpfs that directory's mode, so
    // mount on a new one (created by the runtime, hence the private rootfs).
    b.private_rootfs().mount(json!({
        "destination": "/kt-tmp",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=2m", "mode=750"],
    }))
    .sh("stat -c %a /kt-tmp; df -k /kt-tmp | tail -1; echo x > /kt-tmp/f && cat /kt-tmp/f; grep ' /kt-tmp ' /proc/self/mountinfo");
    let out = run_ok(&rt, &b, "tmpfs");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "750", "mode of the tmpfs root:\n{out}");
    let total_kb: u64 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(total_kb, 2048, "size of the tmpfs:\n{out}");
    assert_eq!(
        lines[2], "x",
        "tmpfs not writable on a read-only root:\n{out}"
    );
    let m = parse_mountinfo(lines[3]);
    assert_eq!(m[0].1, "tmpfs", "{out}");
    let opts: Vec<&str> = m[0].2.split(',').collect();
    assert!(opts.contains(&"nosuid") && opts.contains(&"nodev"), "{out}");
}

#[test]
fn tmpfs_on_an_existing_directory_is_writable_on_a_readonly_root() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.mount(json!({
        "destination": "/tmp",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["size=1m"],
    }))
    .sh("echo x > /tmp/f && cat /tmp/f; df -k /tmp | tail -1");
    let out = run_ok(&rt, &b, "tmpfs-tmp");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "x", "{out}");
    let total_kb: u64 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(total_kb, 1024, "{out}");
    assert!(
        !b.rootfs().join("tmp/f").exists(),
        "wrote through to the shared rootfs"
    );
}

#[test]
fn bind_mount_read_only() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let host_dir = b.host_dir("data");
    fs::write(host_dir.join("hello"), "from host\n").unwrap();
    b.bind(&host_dir, "/var", &["ro"])
        .sh("cat /var/hello; touch /var/new; echo rc=$?");
    let out = run(&rt, &b, "bind-ro");
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "from host\nrc=1\n", "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(!host_dir.join("new").exists());
}

#[test]
fn bind_mount_read_write() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let host_dir = b.host_dir("data");
    b.bind(&host_dir, "/var", &["rw"])
        .sh("echo from-container > /var/out");
    run_ok(&rt, &b, "bind-rw");
    assert_eq!(
        fs::read_to_string(host_dir.join("out")).unwrap(),
        "from-container\n"
    );
}

#[test]
fn bind_mount_of_a_file() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let host_dir = b.host_dir("data");
    let file = host_dir.join("hosts");
    fs::write(&file, "127.0.0.1 kt-bound\n").unwrap();
    b.private_rootfs();
    b.bind(&file, "/etc/hosts", &["ro"])
        .args(&["cat", "/etc/hosts"]);
    assert_eq!(run_ok(&rt, &b, "bind-file"), "127.0.0.1 kt-bound\n");
}

#[test]
fn default_dev_has_the_standard_devices() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh(
        "for d in null zero full random urandom tty; do \
           [ -c /dev/$d ] && echo \"$d $(stat -c '%t,%T %a' /dev/$d)\"; \
         done; \
         readlink /dev/ptmx; readlink /dev/fd; readlink /dev/stdin; readlink /dev/stdout; readlink /dev/stderr; \
         echo x > /dev/null && echo null-ok; head -c 5 /dev/zero | wc -c; head -c 5 /dev/urandom | wc -c",
    );
    let out = run_ok(&rt, &b, "dev");
    let expected_devs = [
        "null 1,3 666",
        "zero 1,5 666",
        "full 1,7 666",
        "random 1,8 666",
        "urandom 1,9 666",
        "tty 5,0 666",
    ];
    for d in expected_devs {
        assert!(
            out.lines().any(|l| l == d),
            "missing or wrong device {d:?}:\n{out}"
        );
    }
    for l in [
        "pts/ptmx",
        "/proc/self/fd",
        "/proc/self/fd/0",
        "/proc/self/fd/1",
        "/proc/self/fd/2",
        "null-ok",
    ] {
        assert!(out.lines().any(|x| x == l), "missing {l:?}:\n{out}");
    }
    assert_eq!(out.lines().filter(|l| *l == "5").count(), 2, "{out}");
}

#[test]
fn dev_has_no_host_devices() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("ls /dev");
    let out = run_ok(&rt, &b, "dev-ls");
    let names: Vec<&str> = out.split_whitespace().collect();
    for host_only in ["vda", "sda", "mem", "kmsg", "ttyS0", "vsock"] {
        assert!(
            !names.contains(&host_only),
            "/dev/{host_only} leaked in: {names:?}"
        );
    }
}

#[test]
fn mount_destination_symlinks_stay_inside_the_rootfs() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.private_rootfs();
    let root = b.rootfs().to_path_buf();
    std::os::unix::fs::symlink("/", root.join("escape-abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../..", root.join("escape-rel")).unwrap();
    let abs_name = unique("kt-escape-abs");
    let rel_name = unique("kt-escape-rel");
    let host_abs = Path::new("/").join(&abs_name);
    let host_rel = Path::new("/").join(&rel_name);
    assert!(!host_abs.exists() && !host_rel.exists(), "precondition");
    for (link, name) in [("escape-abs", &abs_name), ("escape-rel", &rel_name)] {
        b.mount(json!({
            "destination": format!("/{link}/{name}"),
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["size=1m"],
        }));
    }
    b.sh(&format!(
        "grep -E ' /({abs_name}|{rel_name}) ' /proc/self/mountinfo | cut -d' ' -f5,9; \
         echo x > /{abs_name}/f && echo ok-abs; echo x > /{rel_name}/f && echo ok-rel"
    ));
    let out = run(&rt, &b, "escape");
    let host_abs_exists = host_abs.exists();
    let host_rel_exists = host_rel.exists();
    // Clean up anything an escaping runtime made on the host before asserting.
    let _ = fs::remove_dir(&host_abs);
    let _ = fs::remove_dir(&host_rel);
    assert!(
        !host_abs_exists,
        "a mount through a symlink to / created {}",
        host_abs.display()
    );
    assert!(
        !host_rel_exists,
        "a mount through ../.. created {}",
        host_rel.display()
    );
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(&format!("/{abs_name} tmpfs").as_str())
            && lines.contains(&format!("/{rel_name} tmpfs").as_str()),
        "the tmpfs mounts are not at the rootfs-relative targets:\n{out}"
    );
    assert!(
        lines.contains(&"ok-abs") && lines.contains(&"ok-rel"),
        "{out}"
    );
    assert!(
        root.join(&abs_name).is_dir(),
        "mount point not created inside the rootfs"
    );
    assert!(
        root.join(&rel_name).is_dir(),
        "mount point not created inside the rootfs"
    );
    // The host's mount table has no such mount either.
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(&abs_name) && !host_mounts.contains(&rel_name));
}

#[test]
fn mount_destination_dotdot_stays_inside_the_rootfs() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.private_rootfs();
    let name = unique("kt-dotdot");
    let host = Path::new("/").join(&name);
    b.mount(json!({
        "destination": format!("/../../../../{name}"),
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["size=1m"],
    }))
    .sh(&format!(
        "grep ' /{name} ' /proc/self/mountinfo | cut -d' ' -f5,9"
    ));
    let out = run(&rt, &b, "dotdot");
    let escaped = host.exists();
    let _ = fs::remove_dir(&host);
    assert!(!escaped, "a destination with .. created {}", host.display());
    // runc cleans the path to /<name> inside the rootfs; refusing it would be fine too.
    if out.success() {
        assert_eq!(out.stdout.trim(), format!("/{name} tmpfs"), "{out}");
    }
}

// ---- propagation -------------------------------------------------------------

/// The optional fields (`shared:N`, `master:N`...) of a mountinfo line.
fn propagation_tags(line: &str) -> Vec<String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let dash = fields
        .iter()
        .position(|f| *f == "-")
        .unwrap_or(fields.len());
    fields[6.min(dash)..dash]
        .iter()
        .map(|f| f.to_string())
        .collect()
}

/// The mountinfo line of `mount_point` in `mountinfo` (the last one: the top mount).
#[track_caller]
fn mountinfo_line<'a>(mountinfo: &'a str, mount_point: &str) -> &'a str {
    mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(mount_point))
        .unwrap_or_else(|| panic!("no mount on {mount_point} in:\n{mountinfo}"))
}

/// Every peer group (`shared:N`) of the host's mount namespace.
fn host_peer_groups() -> Vec<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .flat_map(propagation_tags)
        .filter(|t| t.starts_with("shared:"))
        .collect()
}

#[test]
fn rootfs_propagation_private_root_has_no_peers() {
    let rt = Runtime::new();
    for propagation in ["private", "rprivate"] {
        let mut b = Bundle::new(&rt);
        b.set("/linux/rootfsPropagation", json!(propagation))
            .args(&["cat", "/proc/self/mountinfo"]);
        let out = run_ok(&rt, &b, "prop-private");
        let root = mountinfo_line(&out, "/");
        assert!(
            propagation_tags(root).is_empty(),
            "rootfsPropagation {propagation}: / has propagation tags: {root}"
        );
    }
}

#[test]
fn rootfs_propagation_shared_runs_and_never_joins_a_host_peer_group() {
    // pivot_root refuses a shared new root or a shared parent of it (EINVAL),
    // so a runtime has to get around that for "shared". runc 1.1.5 leaves /
    // without a peer group here; whatever group / gets, it must not be one of
    // the host's, or the container's mounts would show up on the host.
    let rt = Runtime::new();
    let host_groups = host_peer_groups();
    for propagation in ["shared", "rshared"] {
        let mut b = Bundle::new(&rt);
        b.set("/linux/rootfsPropagation", json!(propagation))
            .args(&["cat", "/proc/self/mountinfo"]);
        let out = run(&rt, &b, "prop-shared");
        assert!(
            out.success(),
            "rootfsPropagation {propagation:?} failed:\n{out}"
        );
        let root = mountinfo_line(&out.stdout, "/");
        for tag in propagation_tags(root) {
            assert!(
                !host_groups.contains(&tag),
                "rootfsPropagation {propagation}: / is a peer of a host mount ({tag}): {root}"
            );
        }
    }
}

/// A tmpfs mounted on the host for one test, shared, unmounted (with what is below it) on drop.
struct SharedHostTmpfs(PathBuf);

impl SharedHostTmpfs {
    #[track_caller]
    fn mount(dir: &Path) -> SharedHostTmpfs {
        let path = dir.to_str().unwrap();
        host_ok(
            "mount",
            &["-t", "tmpfs", "-o", "mode=1777", "kt-prop", path],
        );
        let guard = SharedHostTmpfs(dir.to_path_buf());
        host_ok("mount", &["--make-shared", path]);
        guard
    }

    /// Its peer group on the host (`shared:N`).
    #[track_caller]
    fn peer_group(&self) -> String {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo_line(&mountinfo, self.0.to_str().unwrap());
        propagation_tags(line)
            .into_iter()
            .find(|t| t.starts_with("shared:"))
            .unwrap_or_else(|| panic!("the host tmpfs is not shared: {line}"))
    }
}

impl Drop for SharedHostTmpfs {
    fn drop(&mut self) {
        let out = host("umount", &["-R", "-l", self.0.to_str().unwrap()]);
        if !out.success() {
            eprintln!("cleanup: umount {} failed:\n{out}", self.0.display());
        }
    }
}

/// Bind a shared host tmpfs on /var with `option`; once the container runs,
/// mount another tmpfs below the source on the host. Returns the container's
/// mountinfo line for /var, what it read from the new mount (`no-marker` when
/// it did not see it), and the host tmpfs's peer group.
fn bind_with_propagation(option: &str) -> (String, String, String) {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    let src = b.host_dir("src");
    let tmpfs = SharedHostTmpfs::mount(&src);
    let host_group = tmpfs.peer_group();
    fs::create_dir(src.join("sub")).unwrap();
    b.bind(&src, "/var", &[option]).sh(
        "grep ' /var ' /proc/self/mountinfo > /var/before; touch /var/ready; \
         while [ ! -e /var/go ]; do sleep 0.05; done; \
         cat /var/sub/marker 2>/dev/null || echo no-marker",
    );
    let id = rt.new_id("bind-prop");
    let mut running = rt
        .command(&["run", "--bundle", b.dir_str(), &id])
        .timeout(Duration::from_secs(30))
        .spawn();
    let ready = wait_until(SETTLE, || {
        src.join("ready").exists() || running.try_finished()
    });
    if !src.join("ready").exists() {
        let state = if ready { "exited" } else { "hung" };
        if ready {
            panic!(
                "the container {state} before it was ready:\n{}",
                running.wait()
            );
        }
        panic!("the container {state}: no /var/ready within {SETTLE:?}");
    }
    let sub = src.join("sub");
    host_ok(
        "mount",
        &["-t", "tmpfs", "kt-prop-sub", sub.to_str().unwrap()],
    );
    fs::write(sub.join("marker"), "propagated\n").unwrap();
    fs::write(src.join("go"), "").unwrap();
    let out = running.wait();
    assert!(out.success(), "bind with {option}:\n{out}");
    let before = fs::read_to_string(src.join("before")).unwrap();
    drop(tmpfs);
    (before.trim().to_string(), out.stdout, host_group)
}

#[test]
fn bind_mount_rshared_is_shared_and_receives_host_mounts() {
    let (var, seen, host_group) = bind_with_propagation("rshared");
    let tags = propagation_tags(&var);
    assert!(
        tags.iter().any(|t| t.starts_with("shared:")),
        "an rshared bind mount has no peer group inside: {var}"
    );
    // Still a slave of the host mount (rootfsPropagation defaults to rslave),
    // so mounts made on the host below the source propagate in.
    let host_master = host_group.replace("shared:", "master:");
    assert!(
        tags.contains(&host_master),
        "/var is not a slave of the host mount ({host_master}): {var}"
    );
    assert_eq!(
        seen, "propagated\n",
        "the host mount below the source did not show up in the container"
    );
}

#[test]
fn bind_mount_rprivate_is_private_and_receives_nothing() {
    let (var, seen, _) = bind_with_propagation("rprivate");
    assert!(
        propagation_tags(&var).is_empty(),
        "an rprivate bind mount has propagation tags inside: {var}"
    );
    assert_eq!(
        seen, "no-marker\n",
        "a host mount propagated into an rprivate bind mount"
    );
}

// ---- linux.devices -------------------------------------------------------------

#[test]
fn custom_char_device_from_linux_devices() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set(
        "/linux/devices",
        json!([{
            "path": "/dev/kapseltest", "type": "c", "major": 1, "minor": 3,
            "fileMode": 0o600, "uid": 1000, "gid": 1000,
        }]),
    )
    .set("/process/user", json!({"uid": 1000, "gid": 1000}))
    .sh(
        "ls -ln /dev/kapseltest; echo x > /dev/kapseltest && echo written; \
         awk '$5 == \"/dev/kapseltest\"' /proc/self/mountinfo",
    );
    let out = run_ok(&rt, &b, "dev-custom");
    let lines: Vec<&str> = out.lines().collect();
    let ls: Vec<&str> = lines[0].split_whitespace().collect();
    // crw-------    1 1000     1000        1,   3 Nov 29 06:05 /dev/kapseltest
    assert_eq!(
        ls[..6],
        ["crw-------", "1", "1000", "1000", "1,", "3"],
        "{out}"
    );
    // uid 1000 owns it (mode 0600) and the device cgroup allows 1:3 (it is /dev/null).
    assert_eq!(lines.get(1), Some(&"written"), "{out}");
    // Without a user namespace the node is made with mknod, not bound from the host.
    assert_eq!(lines.len(), 2, "/dev/kapseltest is a mount:\n{out}");
}

/// A device node made on the host for one test, removed on drop.
struct HostNode(PathBuf);

impl Drop for HostNode {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn custom_device_in_a_user_namespace_is_the_hosts_node_bound() {
    // mknod does not work in a user namespace: the host's node is bind-mounted.
    let rt = Runtime::new();
    let path = format!("/dev/{}", unique("kt-dev"));
    host_ok("mknod", &["-m", "600", &path, "c", "1", "3"]);
    let node = HostNode(PathBuf::from(&path));
    host_ok("chown", &["1000:1000", &path]);
    let host_inode = fs::metadata(&node.0).unwrap().ino();
    let mut b = Bundle::new(&rt);
    b.namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/devices",
            json!([{
                "path": path, "type": "c", "major": 1, "minor": 3,
                "fileMode": 0o600, "uid": 1000, "gid": 1000,
            }]),
        )
        .sh(&format!(
            "ls -ln {path}; stat -c %i {path}; echo ===; cat /proc/self/mountinfo"
        ));
    let out = run_ok(&rt, &b, "dev-userns");
    let (head, mountinfo) = out.split_once("===\n").unwrap();
    let lines: Vec<&str> = head.lines().collect();
    let ls: Vec<&str> = lines[0].split_whitespace().collect();
    // Host uid/gid 1000 are not mapped into the namespace: the overflow id shows.
    assert_eq!(
        ls[..6],
        ["crw-------", "1", "65534", "65534", "1,", "3"],
        "{out}"
    );
    assert_eq!(
        lines[1].trim(),
        host_inode.to_string(),
        "not the host's node:\n{out}"
    );
    let line = mountinfo_line(mountinfo, &path);
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[3], path.trim_start_matches("/dev"), "{line}");
    let host_mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let host_dev: Vec<&str> = mountinfo_line(&host_mountinfo, "/dev").split(' ').collect();
    let fstype = |f: &[&str]| f[f.iter().position(|x| *x == "-").unwrap() + 1].to_string();
    assert_eq!(
        fstype(&fields),
        fstype(&host_dev),
        "{path} is not bound from the host's /dev: {line}"
    );
    drop(node);
}
