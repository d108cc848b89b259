//! A handle on the runtime binary under test, with its own `--root` per test.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::bundle::Bundle;
use crate::command::{Cmd, CmdOutput};
use crate::env::{require_root, runtime_binary, unique};
use crate::host::{cgroup_dirs_present, force_remove_cgroup, processes_using, wait_until};
use crate::user::TestUser;

/// The `kapsel-it-reaper` helper binary, built next to the test binaries.
#[track_caller]
pub fn reaper_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/kapsel-it-reaper
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("kapsel-it-reaper"))
        .expect("test binary path has a parent");
    assert!(
        path.is_file(),
        "{} is missing: it is built by `cargo test -p kapsel-integration-tests`",
        path.display()
    );
    path
}

/// Which runtime a binary is, from its `--version` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `kapsel-runtime version ...`: ours.
    Kapsel,
    /// `runc version ...`: the reference.
    Runc,
    /// Anything else runc-compatible (crun, youki...).
    Other,
}

/// A runc-compatible binary plus a private state directory (`--root`), so
/// that tests running in parallel never see each other's containers.
///
/// Dropping it deletes (`delete --force`) every container it created or lists,
/// then kills what is left in the cgroups registered with [`Runtime::track_cgroup`]
/// and removes them — also when the test panicked.
#[derive(Debug)]
pub struct Runtime {
    bin: PathBuf,
    root: TempDir,
    flavor: Flavor,
    version: String,
    ids: RefCell<Vec<String>>,
    cgroups: RefCell<Vec<String>>,
    /// Empty for root; otherwise the argv that runs the binary as an unprivileged user.
    user_prefix: Vec<OsString>,
    /// A copy of the binary the user can reach, when the original is not.
    _bin_copy: Option<TempDir>,
}

impl Runtime {
    /// The binary named by `KAPSEL_RUNTIME` (or the default build). Panics unless root.
    #[track_caller]
    pub fn new() -> Runtime {
        Runtime::with_binary(runtime_binary())
    }

    /// Another runc-compatible binary, e.g. [`crate::RUNC`] for comparisons.
    #[track_caller]
    pub fn with_binary(bin: impl Into<PathBuf>) -> Runtime {
        require_root();
        let bin = bin.into();
        let version = Cmd::new(&bin).arg("--version").ok().stdout;
        let first = version.lines().next().unwrap_or_default().to_string();
        let flavor = if first.starts_with("kapsel-runtime") {
            Flavor::Kapsel
        } else if first.starts_with("runc version") {
            Flavor::Runc
        } else {
            Flavor::Other
        };
        let root = tempfile::Builder::new()
            .prefix("kapsel-it-root-")
            .tempdir()
            .expect("create a --root directory");
        Runtime {
            bin,
            root,
            flavor,
            version: first,
            ids: RefCell::new(Vec::new()),
            cgroups: RefCell::new(Vec::new()),
            user_prefix: Vec::new(),
            _bin_copy: None,
        }
    }

    /// The binary named by `KAPSEL_RUNTIME`, run as `user` (rootless): every command goes
    /// through `setpriv`, `--root` belongs to the user, and the binary is copied where the
    /// user can execute it when its own path is not reachable.
    #[track_caller]
    pub fn as_user(user: &TestUser) -> Runtime {
        let mut rt = Runtime::new();
        let (bin, copy) = user.reachable_binary(&rt.bin);
        rt.bin = bin;
        rt._bin_copy = copy;
        user.chown(rt.root.path());
        rt.user_prefix = user.prefix();
        rt
    }

    /// The argv that starts the binary: itself, or behind the user prefix.
    fn argv0(&self) -> Vec<OsString> {
        let mut argv = self.user_prefix.clone();
        argv.push(self.bin.clone().into_os_string());
        argv
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The `--root` state directory of this handle.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Our runtime? Kapsel-only expectations (wording, deliberate differences
    /// from runc on this machine) are checked only then.
    pub fn is_kapsel(&self) -> bool {
        self.flavor == Flavor::Kapsel
    }

    pub fn is_runc(&self) -> bool {
        self.flavor == Flavor::Runc
    }

    /// First line of `--version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A fresh container id (`kt-<tag>-<pid>-<n>`), deleted when the handle drops.
    pub fn new_id(&self, tag: &str) -> String {
        let id = unique(&format!("kt-{tag}"));
        self.ids.borrow_mut().push(id.clone());
        id
    }

    /// Remember a cgroup path to force-remove when the handle drops.
    pub fn track_cgroup(&self, cgroups_path: &str) {
        self.cgroups.borrow_mut().push(cgroups_path.to_string());
    }

    /// `<bin> --root <root> ARGS...`, not yet run.
    pub fn command(&self, args: &[&str]) -> Cmd {
        let argv = self.argv0();
        Cmd::new(&argv[0])
            .args(&argv[1..])
            .arg("--root")
            .arg(self.root())
            .args(args)
    }

    /// Run `<bin> --root <root> ARGS...`, whatever the outcome.
    pub fn cmd(&self, args: &[&str]) -> CmdOutput {
        self.command(args).output()
    }

    /// Run and panic with the command, exit code, stdout and stderr unless it succeeded.
    #[track_caller]
    pub fn run_ok(&self, args: &[&str]) -> CmdOutput {
        let caller = std::panic::Location::caller();
        let out = self.cmd(args);
        assert!(
            out.success(),
            "{} failed (called at {caller}):\n{out}",
            self.version
        );
        out
    }

    /// Run, assert that it failed with a non-zero exit code, and return its stderr.
    #[track_caller]
    pub fn run_err(&self, args: &[&str]) -> String {
        let caller = std::panic::Location::caller();
        let out = self.cmd(args);
        assert!(
            out.code.is_some_and(|c| c != 0),
            "{} should have failed (called at {caller}):\n{out}",
            self.version
        );
        out.stderr
    }

    /// `state ID` parsed; panics when it fails.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let out = self.run_ok(&["state", id]);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state {id} printed invalid JSON ({e}):\n{out}"))
    }

    /// The `status` field of `state ID`, or None when `state` fails.
    pub fn status(&self, id: &str) -> Option<String> {
        let out = self.cmd(&["state", id]);
        if !out.success() {
            return None;
        }
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        v["status"].as_str().map(str::to_string)
    }

    /// The init pid from `state ID`.
    #[track_caller]
    pub fn pid(&self, id: &str) -> i32 {
        let state = self.state(id);
        state["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state {id} has no pid: {state}")) as i32
    }

    /// Wait (up to `timeout`) until `state ID` reports `status`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) {
        let mut last = None;
        let ok = wait_until(timeout, || {
            last = self.status(id);
            last.as_deref() == Some(status)
        });
        assert!(
            ok,
            "container {id} did not reach status {status:?} within {timeout:?} (last: {last:?})"
        );
    }

    /// The ids `list -q` prints.
    #[track_caller]
    pub fn list_ids(&self) -> Vec<String> {
        let out = self.run_ok(&["list", "-q"]);
        out.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Names inside `--root` (state directories, lock files...).
    pub fn root_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Run `create` (extra `args` first), assert that it fails, and that it
    /// left nothing behind: no container in `list`, nothing under `--root`
    /// naming the id, no cgroup directory, no process. The runtime runs under
    /// `kapsel-it-reaper`, a child subreaper, which catches every process the
    /// runtime leaves behind. Returns the output.
    #[track_caller]
    pub fn create_must_fail(&self, bundle: &Bundle, id: &str, args: &[&str]) -> CmdOutput {
        let caller = std::panic::Location::caller();
        let report = tempfile::NamedTempFile::new().expect("reaper report file");
        let out = Cmd::new(reaper_binary())
            .arg(report.path())
            .arg("--")
            .args(self.argv0())
            .arg("--root")
            .arg(self.root())
            .arg("create")
            .args(args)
            .args(["--bundle", bundle.dir_str(), id])
            .output();
        assert!(
            out.code.is_some_and(|c| c != 0),
            "{} create should have failed (called at {caller}):\n{out}",
            self.version
        );
        let leftovers = fs::read_to_string(report.path()).unwrap_or_default();
        assert!(
            leftovers.trim().is_empty(),
            "the failed create of {id} left processes behind (pid cmdline):\n{leftovers}\n{out}"
        );
        self.assert_nothing_left(bundle, id, &out);
        out
    }

    /// After a failed or deleted container: `id` is not listed, nothing under
    /// `--root` names it, no process is rooted or working in the bundle, and
    /// the bundle's cgroup is gone. `out` is shown when an assertion fails.
    #[track_caller]
    pub fn assert_nothing_left(&self, bundle: &Bundle, id: &str, out: &CmdOutput) {
        let listed = self.list_ids();
        assert!(
            !listed.iter().any(|l| l == id),
            "{id} is still listed after a failed create: {listed:?}\n{out}"
        );
        assert!(
            !self.root_mentions(id),
            "state of {id} left under --root {}: {:?}\n{out}",
            self.root().display(),
            self.root_entries()
        );
        let mut procs = Vec::new();
        let gone = wait_until(Duration::from_secs(5), || {
            procs = processes_using(bundle.path());
            procs.is_empty()
        });
        assert!(
            gone,
            "processes left after a failed create of {id}: {procs:?}\n{out}"
        );
        let mut cgroups = Vec::new();
        let gone = wait_until(Duration::from_secs(5), || {
            cgroups = cgroup_dirs_present(bundle.cgroups_path());
            cgroups.is_empty()
        });
        assert!(
            gone,
            "cgroups left after a failed create of {id}: {cgroups:?}\n{out}"
        );
    }

    /// Does anything under `--root` mention `id` (a state dir, a file)?
    pub fn root_mentions(&self, id: &str) -> bool {
        self.root_entries().iter().any(|n| n.contains(id))
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let mut ids = self.ids.borrow().clone();
        if let Ok(out) = self.command(&["list", "-q"]).output_result() {
            for line in out.stdout.lines().map(str::trim) {
                if !line.is_empty() && !ids.iter().any(|i| i == line) {
                    ids.push(line.to_string());
                }
            }
        }
        for id in &ids {
            let leftover = self.root_mentions(id);
            let listed = self
                .command(&["state", id])
                .output_result()
                .is_ok_and(|o| o.success());
            if !leftover && !listed {
                continue;
            }
            let result = self
                .command(&["delete", "--force", id])
                .timeout(Duration::from_secs(30))
                .output_result();
            match result {
                Ok(out) if out.success() => {}
                Ok(out) => eprintln!("cleanup: delete --force {id} failed:\n{out}"),
                Err(msg) => eprintln!("cleanup: {msg}"),
            }
        }
        for cg in self.cgroups.borrow().iter() {
            force_remove_cgroup(cg);
        }
    }
}
