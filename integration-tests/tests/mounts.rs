//! Mounts: /proc, masked and read-only paths, read-only root, tmpfs options,
//! bind mounts, /dev, and mount destinations that try to escape the rootfs.

use std::fs;
use std::path::Path;

use kapsel_integration_tests::{unique, Bundle, CmdOutput, Runtime};
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
