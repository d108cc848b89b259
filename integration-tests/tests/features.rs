//! Less common parts of the spec and command line: `run --no-pivot`,
//! `linux.personality`, and LSM settings on a host without an LSM.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kapsel_integration_tests::{kapsel_only, runc_for_comparison, Bundle, CmdOutput, Runtime};
use serde_json::json;

fn run(rt: &Runtime, b: &Bundle, extra: &[&str], tag: &str) -> CmdOutput {
    let id = rt.new_id(tag);
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--bundle", b.dir_str(), &id]);
    rt.cmd(&args)
}

#[track_caller]
fn run_ok(rt: &Runtime, b: &Bundle, extra: &[&str], tag: &str) -> String {
    let out = run(rt, b, extra, tag);
    assert!(out.success(), "run failed:\n{out}");
    out.stdout
}

/// Mount points of a mountinfo text, sorted.
fn mount_points(mountinfo: &str) -> Vec<String> {
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect();
    points.sort();
    points
}

const NO_PIVOT_SCRIPT: &str = "stat -c %i /; ls /; echo ===; cat /proc/self/mountinfo";

#[test]
fn run_no_pivot_uses_the_rootfs_as_root() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh(NO_PIVOT_SCRIPT);
    let out = run_ok(&rt, &b, &["--no-pivot"], "no-pivot");
    let (head, mountinfo) = out.split_once("===\n").unwrap();
    let mut lines = head.lines();
    let inode: u64 = lines.next().unwrap().trim().parse().unwrap();
    let rootfs = b.rootfs();
    assert_eq!(
        inode,
        fs::metadata(rootfs).unwrap().ino(),
        "/ inside is not the rootfs:\n{out}"
    );
    let mut inside: Vec<&str> = lines.collect();
    inside.sort();
    let mut on_host: Vec<String> = fs::read_dir(rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_host.sort();
    assert_eq!(inside, on_host, "ls / inside vs the rootfs on the host");
    // The root mount is the rootfs bind mount: its root field is the rootfs path.
    let root_line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no mount on / in:\n{mountinfo}"));
    assert_eq!(
        root_line.split(' ').nth(3),
        rootfs.to_str(),
        "root mount: {root_line}"
    );
    assert!(
        mount_points(mountinfo).contains(&"/proc".to_string()),
        "no /proc:\n{mountinfo}"
    );
}

#[test]
fn run_no_pivot_shows_the_same_mounts_as_runc() {
    let rt = Runtime::new();
    let Some(runc) = runc_for_comparison(&rt) else {
        return;
    };
    let mut b = Bundle::new(&rt);
    b.sh("cat /proc/self/mountinfo");
    let ours = run_ok(&rt, &b, &["--no-pivot"], "no-pivot-ours");
    let theirs = run_ok(&runc, &b, &["--no-pivot"], "no-pivot-runc");
    assert_eq!(
        mount_points(&ours),
        mount_points(&theirs),
        "mount points with --no-pivot\n--- ours ---\n{ours}--- runc ---\n{theirs}"
    );
}

#[test]
fn personality_linux_keeps_the_native_machine() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/linux/personality", json!({"domain": "LINUX"}))
        .sh("uname -m; cat /proc/self/personality");
    assert_eq!(run_ok(&rt, &b, &[], "pers-linux"), "x86_64\n00000000\n");
}

#[test]
fn kapsel_personality_linux32_reports_i686() {
    // runc 1.1.5 ignores linux.personality (uname -m stays x86_64).
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    let mut b = Bundle::new(&rt);
    b.set("/linux/personality", json!({"domain": "LINUX32"}))
        .sh("uname -m; cat /proc/self/personality");
    // PER_LINUX32 is 0x0008.
    assert_eq!(run_ok(&rt, &b, &[], "pers-linux32"), "i686\n00000008\n");
}

/// This machine has no LSM: nothing in /sys/kernel/security, no AppArmor module.
#[track_caller]
fn assert_no_lsm() {
    let entries = fs::read_dir("/sys/kernel/security")
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(
        entries, 0,
        "precondition: /sys/kernel/security is empty on this machine"
    );
    assert!(
        !Path::new("/sys/module/apparmor").exists(),
        "precondition: AppArmor is not loaded on this machine"
    );
}

#[test]
fn kapsel_lsm_settings_are_ignored_without_the_lsm() {
    // runc 1.1.5 fails on this host for each of the three settings: apparmorProfile
    // ("write /proc/self/attr/exec: invalid argument"), selinuxLabel ("selinux is
    // disabled or not supported"), mountLabel (the context= option of /dev's tmpfs).
    // kapsel applies them only where the host enables the LSM.
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    assert_no_lsm();
    let settings = [
        ("/process/apparmorProfile", "kt-profile"),
        (
            "/process/selinuxLabel",
            "system_u:system_r:container_t:s0:c1,c2",
        ),
        (
            "/linux/mountLabel",
            "system_u:object_r:container_file_t:s0:c1,c2",
        ),
    ];
    for (pointer, value) in settings {
        let mut b = Bundle::new(&rt);
        b.set(pointer, json!(value)).sh("echo ran");
        let out = run(&rt, &b, &[], "lsm");
        assert!(out.success(), "{pointer} = {value:?}:\n{out}");
        assert_eq!(out.stdout, "ran\n", "{pointer}:\n{out}");
    }
    // All three at once, as a client on an SELinux/AppArmor host would send them.
    let mut b = Bundle::new(&rt);
    for (pointer, value) in settings {
        b.set(pointer, json!(value));
    }
    b.sh("echo ran");
    assert_eq!(run_ok(&rt, &b, &[], "lsm-all"), "ran\n");
}
