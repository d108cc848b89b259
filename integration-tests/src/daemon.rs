//! Daemons the client tests start (containerd, dockerd) and the cleanup they need:
//! stopping by pid, killing leftover shims, unmounting what they left mounted.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::host::wait_until;

/// Start `program args...` in the background with stdout and stderr appended
/// to `log`, in its own session (so the test harness's signals do not reach it).
#[track_caller]
pub fn spawn_daemon(program: &str, args: &[&str], log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let err = out.try_clone().expect("dup log file");
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// SIGTERM the daemon we started, wait up to `grace`, then SIGKILL; reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id() as i32, libc::SIGTERM);
    let exited = wait_until(grace, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Send `sig` to `pid` (ignoring errors: it may be gone already).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; callers pass pids of
    // processes the tests started.
    unsafe { libc::kill(pid, sig) };
}

/// Pids whose command line (NULs as spaces) satisfies `pred`.
pub fn pids_matching(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if pred(cmdline.trim()) {
            out.push(pid);
        }
    }
    out
}

/// SIGKILL the processes whose command line mentions `marker` (a path or
/// socket unique to one test run, so only our own processes match).
pub fn kill_processes_mentioning(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let pids: Vec<i32> = pids_matching(|c| c.contains(marker))
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    for pid in &pids {
        signal(*pid, libc::SIGKILL);
    }
    pids
}

/// Lazily unmount everything mounted at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: c is a valid NUL-terminated path for the duration of the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mount_path(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// Unmount what is left below `dir`, then remove it (best effort, never panics).
pub fn remove_tree(dir: &Path) {
    unmount_below(dir);
    if let Err(e) = fs::remove_dir_all(dir) {
        if dir.exists() {
            eprintln!("cleanup: cannot remove {}: {e}", dir.display());
        }
    }
}

/// Remove the (empty) cgroup `path` from every v1 hierarchy, children first.
pub fn remove_cgroup_tree(path: &str) {
    for h in crate::host::cgroup_v1_hierarchies() {
        let top = crate::host::cgroup_dir(&h, path);
        remove_cgroup_dirs(&top);
    }
}

fn remove_cgroup_dirs(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dirs(&e.path());
            }
        }
    }
    if fs::remove_dir(dir).is_err() && dir.exists() {
        eprintln!("cleanup: cgroup {} is not empty", dir.display());
    }
}
