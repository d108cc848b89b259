//! The runtime binary (`kapsel-runtime`, or any runc-compatible one) driven through runc's CLI.
//! Every child is waited for through the [`Reaper`], never with `Child::wait` (the reaping thread
//! would steal the status).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::reaper::Reaper;

/// Where runtime state goes unless the runtime options name a `Root`.
const DEFAULT_ROOT: &str = "/run/kapsel/shim-runtime";
/// The file in the bundle that remembers which runtime and root the task used.
const SAVED: &str = "shim-runtime.json";

/// Runtime failures, with what the runtime logged.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} {command} failed (exit {status}): {message}")]
    Failed {
        binary: PathBuf,
        command: String,
        status: i32,
        message: String,
    },
}

/// Standard streams handed to the runtime (and from there to the container) on create/exec.
#[derive(Debug, Default)]
pub struct ChildIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// One runtime binary with its global options.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    /// `--systemd-cgroup` on every call (runc options' `SystemdCgroup`).
    pub systemd_cgroup: bool,
    /// Extra flags for `create` (`--no-pivot`, `--no-new-keyring`).
    pub create_flags: Vec<&'static str>,
}

/// The runc-style runtime options the shim honours (containerd.runc.v1.Options).
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
}

impl Runtime {
    /// The runtime for a bundle: `binary` (from the runtime options) or `kapsel-runtime` beside
    /// this executable, else on `$PATH`; its state under `root` (runc options' `Root`, default
    /// `/run/kapsel/shim-runtime`) plus the namespace, as containerd's runc shim does.
    pub fn new(options: &RuntimeOptions, namespace: &str, bundle: &Path) -> Runtime {
        let binary = match options.binary_name.as_str() {
            "" => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("kapsel-runtime")))
                .filter(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from("kapsel-runtime")),
            b => PathBuf::from(b),
        };
        let root = match options.root.as_str() {
            "" => Path::new(DEFAULT_ROOT),
            r => Path::new(r),
        };
        let mut create_flags = Vec::new();
        if options.no_pivot_root {
            create_flags.push("--no-pivot");
        }
        if options.no_new_keyring {
            create_flags.push("--no-new-keyring");
        }
        Runtime {
            binary,
            root: root.join(namespace),
            log: bundle.join("log.json"),
            systemd_cgroup: options.systemd_cgroup,
            create_flags,
        }
    }

    /// Record binary and root in the bundle, for `delete` after the shim is gone.
    pub fn save(&self, bundle: &Path) -> std::io::Result<()> {
        let doc = serde_json::json!({
            "binary": self.binary.to_string_lossy(),
            "root": self.root.to_string_lossy(),
            "systemd_cgroup": self.systemd_cgroup,
        });
        std::fs::write(bundle.join(SAVED), doc.to_string())
    }

    /// The runtime `save` recorded in `bundle`, else the default one.
    pub fn load(bundle: &Path, namespace: &str) -> Runtime {
        let saved = std::fs::read(bundle.join(SAVED))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let field = |k: &str| {
            saved
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(serde_json::Value::as_str)
                .map(PathBuf::from)
        };
        let mut rt = Runtime::new(&RuntimeOptions::default(), namespace, bundle);
        if let (Some(binary), Some(root)) = (field("binary"), field("root")) {
            rt.binary = binary;
            rt.root = root;
            rt.systemd_cgroup = saved
                .as_ref()
                .and_then(|v| v.get("systemd_cgroup"))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
        }
        rt
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            c.arg("--systemd-cgroup");
        }
        c.args(args);
        crate::reaper::unblock_signals_in_child(&mut c);
        c
    }

    /// Run to completion, capturing stdout; `input` goes to stdin.
    pub fn output(
        &self,
        reaper: &Reaper,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut c = self.command(args);
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let log_from = self.log_len();
        let mut child = c.spawn().map_err(|source| self.spawn_err(source))?;
        // stdin is fed and stderr drained on a helper thread while this one drains stdout: read
        // one after the other, a runtime that fills the other pipe (64 KiB) would block forever.
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let input = input.map(<[u8]>::to_vec);
        let side = std::thread::Builder::new()
            .name("runtime-stderr".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if let (Some(mut w), Some(data)) = (stdin, input) {
                    let _ = w.write_all(&data);
                }
                let mut err = Vec::new();
                if let Some(mut e) = stderr {
                    let _ = e.read_to_end(&mut err);
                }
                err
            });
        let mut out = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        let err = match side {
            Ok(t) => t.join().unwrap_or_default(),
            // No thread: the child's pipes closed with the closure; its output is lost, not
            // waited for.
            Err(_) => Vec::new(),
        };
        let status = reaper.wait(child.id() as i32);
        if status != 0 {
            return Err(self.failed(args, status, &err, log_from));
        }
        Ok(out)
    }

    /// Run with the given stdio (create/exec: the container inherits it), without capturing.
    pub fn run_with_io(
        &self,
        reaper: &Reaper,
        args: &[&str],
        io: ChildIo,
    ) -> Result<(), RuntimeError> {
        let mut c = self.command(args);
        c.stdin(io.stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(io.stdout.map_or_else(Stdio::null, Stdio::from))
            .stderr(io.stderr.map_or_else(Stdio::null, Stdio::from));
        let log_from = self.log_len();
        let child = c.spawn().map_err(|source| self.spawn_err(source))?;
        // Drop our copies of the container's stdio now, so that EOF reaches the copiers.
        drop(c);
        let status = reaper.wait(child.id() as i32);
        if status != 0 {
            return Err(self.failed(args, status, &[], log_from));
        }
        Ok(())
    }

    fn spawn_err(&self, source: std::io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        }
    }

    /// Where the runtime's log ends now: a failed command's error is looked for after it, so
    /// that an older command's error is never reported as this one's.
    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    fn failed(&self, args: &[&str], status: i32, stderr: &[u8], log_from: u64) -> RuntimeError {
        let mut message = last_log_error(&self.log, log_from).unwrap_or_default();
        if message.is_empty() {
            message = String::from_utf8_lossy(stderr).trim().to_string();
        }
        RuntimeError::Failed {
            binary: self.binary.clone(),
            command: args.first().copied().unwrap_or_default().to_string(),
            status,
            message,
        }
    }
}

/// The message of the last error-level line of a runc-style JSON log, from byte `from` on.
fn last_log_error(log: &Path, from: u64) -> Option<String> {
    let bytes = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default());
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let level = v.get("level")?.as_str()?;
        if level == "error" || level == "fatal" {
            v.get("msg")?.as_str().map(String::from)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_of_json_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"container \\\"a\\\" not found\"}\n{\"level\":\"debug\",\"msg\":\"y\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_log_error(&log, 0).unwrap(),
            "container \"a\" not found"
        );
        // A later command that logged nothing has no error of its own in the log.
        let end = std::fs::metadata(&log).unwrap().len();
        assert_eq!(last_log_error(&log, end), None);
    }

    /// A runtime that writes more to stderr than a pipe holds, then to stdout, fed stdin.
    #[test]
    fn output_drains_both_streams_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("rt.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nhead -c 300000 /dev/zero | tr '\\0' e >&2\nread line\necho \"out:$line\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rt = Runtime {
            binary: script,
            root: dir.path().join("root"),
            log: dir.path().join("log.json"),
            systemd_cgroup: false,
            create_flags: Vec::new(),
        };
        let reaper = Reaper::polling_watched();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(rt.output(&reaper, &["state", "x"], Some(b"in\n")));
        });
        let out = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("output() blocked with a full stderr pipe")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "out:in\n");
    }

    #[test]
    fn saved_runtime_is_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let options = RuntimeOptions {
            binary_name: "/usr/sbin/runc".into(),
            root: "/tmp/r".into(),
            systemd_cgroup: true,
            no_pivot_root: true,
            no_new_keyring: false,
        };
        let rt = Runtime::new(&options, "ns1", dir.path());
        assert_eq!(rt.root, Path::new("/tmp/r/ns1"));
        assert_eq!(rt.create_flags, vec!["--no-pivot"]);
        rt.save(dir.path()).unwrap();
        let back = Runtime::load(dir.path(), "ns1");
        assert_eq!(back.binary, Path::new("/usr/sbin/runc"));
        assert_eq!(back.root, Path::new("/tmp/r/ns1"));
        assert!(back.systemd_cgroup);
        let other = tempfile::tempdir().unwrap();
        let default = Runtime::load(other.path(), "ns2");
        assert_eq!(default.root, Path::new(DEFAULT_ROOT).join("ns2"));
    }
}
