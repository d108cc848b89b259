//! Unprivileged users for rootless tests: a system user made for the test (with subordinate
//! ids in /etc/subuid and /etc/subgid), commands run as it with `setpriv`, and its removal.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::command::{host, Cmd};
use crate::env::{require_program, require_root};
use crate::host::pid_alive;

/// Name prefix of the users the tests make: `kapsel-rl-<pid>-<n>`.
const PREFIX: &str = "kapsel-rl-";

/// First subordinate uid/gid given to each test user (65536 of them). Ranges of different
/// users may overlap: newuidmap only checks the caller's own entries.
pub const SUBID_START: u32 = 1_000_000;
/// How many subordinate ids each test user gets.
pub const SUBID_COUNT: u32 = 65536;

/// A system user created for one test and deleted (with its /etc/subuid and /etc/subgid
/// entries) when dropped. Drop it after everything that runs as it: declare it first.
#[derive(Debug)]
pub struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: tempfile::TempDir,
}

impl TestUser {
    /// Creates `kapsel-rl-<pid>-<n>` with `useradd --system` and gives it
    /// [`SUBID_START`]..+[`SUBID_COUNT`] in /etc/subuid and /etc/subgid. Users left behind by
    /// test processes that no longer run are deleted first.
    #[track_caller]
    pub fn new() -> TestUser {
        require_root();
        require_program("useradd", "passwd");
        require_program("setpriv", "util-linux");
        remove_stale_users();
        let name = crate::env::unique(PREFIX.trim_end_matches('-'));
        let range = format!("{}-{}", SUBID_START, SUBID_START + SUBID_COUNT - 1);
        // useradd and usermod take the /etc/passwd lock and give up when another test (or
        // helper) holds it: try again for a while.
        retry_locked(&[
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            &name,
        ]);
        retry_locked(&[
            "usermod",
            "--add-subuids",
            &range,
            "--add-subgids",
            &range,
            &name,
        ]);
        let id = |flag: &str| -> u32 {
            let out = host("id", &[flag, &name]);
            out.stdout
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("id {flag} {name}:\n{out}"))
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let home = tempfile::Builder::new()
            .prefix("kapsel-it-rl-home-")
            .tempdir()
            .expect("create the test user's directory");
        let user = TestUser {
            name,
            uid,
            gid,
            home,
        };
        user.chown(user.home.path());
        user
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// A private directory the user owns (0700), removed with the user.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `chown -R user:group path`.
    #[track_caller]
    pub fn chown(&self, path: &Path) {
        Cmd::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .ok();
    }

    /// The argv prefix that runs a program as this user: `setpriv` with its uid, gid and
    /// groups (which also drops every capability), then `env` without XDG_RUNTIME_DIR
    /// (root's would point at a directory the user cannot write) and with HOME set to
    /// [`TestUser::home`].
    pub fn prefix(&self) -> Vec<OsString> {
        let mut home = OsString::from("HOME=");
        home.push(self.home.path());
        vec![
            "setpriv".into(),
            format!("--reuid={}", self.uid).into(),
            format!("--regid={}", self.gid).into(),
            "--init-groups".into(),
            "--".into(),
            "env".into(),
            "-u".into(),
            "XDG_RUNTIME_DIR".into(),
            home,
        ]
    }

    /// `program args...` as this user, not yet run.
    pub fn cmd(&self, program: impl Into<OsString>, args: &[&str]) -> Cmd {
        let prefix = self.prefix();
        Cmd::new(&prefix[0])
            .args(&prefix[1..])
            .arg(program.into())
            .args(args)
    }

    /// Can this user execute `bin` (every directory on the way searchable)?
    pub fn can_execute(&self, bin: &Path) -> bool {
        self.cmd("test", &["-x"]).arg(bin).output().success()
    }

    /// `bin` itself when the user can execute it, else a copy in a directory the user can
    /// reach (kept as long as the returned guard lives).
    #[track_caller]
    pub fn reachable_binary(&self, bin: &Path) -> (PathBuf, Option<tempfile::TempDir>) {
        if self.can_execute(bin) {
            return (bin.to_path_buf(), None);
        }
        let dir = tempfile::Builder::new()
            .prefix("kapsel-it-rl-bin-")
            .tempdir()
            .expect("create a directory for the runtime copy");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let copy = dir
            .path()
            .join(bin.file_name().expect("binary has a file name"));
        fs::copy(bin, &copy)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), copy.display()));
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(
            self.can_execute(&copy),
            "{} cannot execute {} even after copying it to {}",
            self.name,
            bin.display(),
            copy.display()
        );
        (copy, Some(dir))
    }

    /// Pids of the live processes whose real uid is this user's.
    pub fn processes(&self) -> Vec<i32> {
        processes_of(self.uid)
    }
}

impl Default for TestUser {
    fn default() -> Self {
        TestUser::new()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Give exiting container processes a moment; a deleted container's init may still
        // be on its way out.
        for _ in 0..100 {
            if self.processes().is_empty() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let left = self.processes();
        if !left.is_empty() {
            eprintln!(
                "cleanup: processes of {} still running at the end of the test: {left:?}",
                self.name
            );
        }
        delete_user(&self.name);
    }
}

fn processes_of(uid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let ruid = crate::host::proc_status_field(pid, "Uid")
            .and_then(|u| u.split_whitespace().next().and_then(|v| v.parse().ok()));
        if ruid == Some(uid) && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// userdel (which also drops the user's /etc/subuid and /etc/subgid entries); with
/// `--force` when a zombie or a straggler still runs as the user.
fn delete_user(name: &str) {
    for attempt in 0..50 {
        let out = if attempt < 25 {
            host("userdel", &[name])
        } else {
            host("userdel", &["--force", name])
        };
        // 6: no such user.
        if out.success() || out.code == Some(6) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("cleanup: could not delete the test user {name}");
}

#[track_caller]
fn retry_locked(argv: &[&str]) {
    let mut last = None;
    for _ in 0..50 {
        let out = host(argv[0], &argv[1..]);
        if out.success() {
            return;
        }
        let locked = out.stderr.contains("lock") || out.stderr.contains("try again");
        last = Some(out);
        if !locked {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} failed:\n{}",
        argv[0],
        last.map(|o| o.to_string()).unwrap_or_default()
    );
}

/// Deletes `kapsel-rl-<pid>-<n>` users whose test process is gone and that run nothing.
fn remove_stale_users() {
    let Ok(passwd) = fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let (Some(name), Some(uid)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let idle = uid.parse().is_ok_and(|u| processes_of(u).is_empty());
        if !pid_alive(pid) && idle {
            delete_user(name);
        }
    }
}
