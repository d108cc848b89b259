//! A container as the runtime keeps it between commands: `<root>/<id>/state.json` plus the
//! exec fifo, and the status derived from the live process.

pub mod create;

use crate::cgroups::{Cgroup, CgroupError};
pub use crate::spec::Spec;
use crate::spec::SpecError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.' only")]
    InvalidId(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("container {id:?} is {status}: cannot {op}{hint}")]
    WrongState {
        id: String,
        status: Status,
        op: &'static str,
        hint: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{asked}, but a rootless container gets no cgroup here: uid {uid} cannot create {} ({error}), \
         and {why}; {hint}",
        path.display()
    )]
    RootlessCgroup {
        /// What in the config needs a cgroup: the limits or the explicit cgroupsPath.
        asked: String,
        uid: u32,
        path: std::path::PathBuf,
        error: io::Error,
        why: &'static str,
        hint: &'static str,
    },
    #[error("container init failed: {0}")]
    Init(String),
}

pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub init_pid: i32,
    /// Start time of init (field 22 of /proc/PID/stat), to tell a reused pid apart.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub cgroup: Option<Cgroup>,
    pub config: Spec,
    #[serde(default)]
    pub rootless: bool,
    /// Set until `create` has finished; a state left with it set means the runtime died
    /// half-way, and only `delete --force` applies.
    #[serde(default)]
    pub creating: bool,
}

/// The runtime-spec state, as `state` and hooks print it (plus runc's extra fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub state: State,
}

pub fn validate_id(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidId(id.to_string()))
    }
}

/// Start time of `pid` and whether it is a zombie, from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

impl Container {
    pub fn load(root: &Path, id: &str) -> Result<Container, ContainerError> {
        validate_id(id)?;
        let dir = root.join(id);
        let data = match std::fs::read(dir.join("state.json")) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContainerError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err(format!("read state of {id:?}"))(e)),
        };
        let state: State = serde_json::from_slice(&data).map_err(|e| {
            ContainerError::Invalid(format!(
                "state of container {id:?} in {} is corrupt: {e}",
                dir.display()
            ))
        })?;
        Ok(Container { dir, state })
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn save(&self) -> Result<(), ContainerError> {
        let tmp = self.dir.join("state.json.tmp");
        let data = serde_json::to_vec(&self.state)
            .map_err(|e| ContainerError::Invalid(format!("encode state: {e}")))?;
        std::fs::write(&tmp, data).map_err(io_err(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, self.dir.join("state.json")).map_err(io_err("replace state.json"))
    }

    /// Whether init is still the process we started (not exited, not a zombie, not reused).
    pub fn init_alive(&self) -> bool {
        alive(self.state.init_pid, self.state.init_start_time)
    }

    pub fn status(&self) -> Status {
        let status = status_of(
            &self.dir,
            self.state.init_pid,
            self.state.init_start_time,
            self.state.cgroup.as_ref(),
        );
        if self.state.creating && status != Status::Stopped {
            return Status::Creating;
        }
        status
    }

    pub fn oci_state(&self) -> OciState {
        let status = self.status();
        self.oci_state_with(status)
    }

    pub fn oci_state_with(&self, status: Status) -> OciState {
        OciState {
            oci_version: crate::spec::OCI_VERSION.into(),
            id: self.state.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.state.init_pid
            },
            status,
            bundle: self.state.bundle.clone(),
            rootfs: self.state.rootfs.clone(),
            created: self.state.created.clone(),
            owner: self.state.owner.clone(),
            annotations: self.state.config.annotations.clone(),
        }
    }

    pub fn state_json(&self, status: Status) -> String {
        serde_json::to_string(&self.oci_state_with(status)).unwrap_or_default()
    }

    /// Sends `sig` to init, or with `all` to every process in the container's cgroup.
    pub fn signal(&self, sig: i32, all: bool) -> Result<(), ContainerError> {
        let status = self.status();
        if status == Status::Stopped {
            return Err(ContainerError::WrongState {
                id: self.id().into(),
                status,
                op: "send a signal",
                hint: "",
            });
        }
        if all {
            if let Some(cg) = &self.state.cgroup {
                for pid in cg.pids()? {
                    // SAFETY: kill takes integers; a vanished pid is ESRCH, which is fine.
                    unsafe { libc::kill(pid, sig) };
                }
                if sig == libc::SIGKILL && status == Status::Paused {
                    let _ = cg.thaw();
                }
                return Ok(());
            }
        }
        if self.state.init_pid <= 0 {
            return Ok(());
        }
        // SAFETY: kill takes integers; the pid is positive, so never a process group.
        if unsafe { libc::kill(self.state.init_pid, sig) } < 0 {
            return Err(io_err(format!(
                "signal {sig} to pid {}",
                self.state.init_pid
            ))(io::Error::last_os_error()));
        }
        if sig == libc::SIGKILL && status == Status::Paused {
            if let Some(cg) = &self.state.cgroup {
                let _ = cg.thaw();
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for init to exit.
    pub fn wait_stopped(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        if let Some(fd) = pidfd_open(self.state.init_pid) {
            if !self.init_alive() {
                return true;
            }
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            return !self.init_alive();
        }
        while std::time::Instant::now() < deadline {
            if !self.init_alive() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        !self.init_alive()
    }

    /// Removes everything the container had on the host: its processes (when it shares the
    /// host's pid namespace), its cgroup, and its state directory; then runs poststop hooks.
    pub fn destroy(&self) -> Result<(), ContainerError> {
        if let Some(cg) = &self.state.cgroup {
            if let Ok(pids) = cg.pids() {
                for pid in pids {
                    // SAFETY: kill takes integers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = cg.thaw();
            }
            cg.destroy()?;
        }
        let hooks = self
            .state
            .config
            .hooks
            .as_ref()
            .map(|h| h.poststop.clone())
            .unwrap_or_default();
        if !hooks.is_empty() {
            let json = self.state_json(Status::Stopped);
            if let Err(e) = crate::hooks::run_all("poststop", &hooks, &json) {
                tracing::warn!("{e}");
            }
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(format!("remove {}", self.dir.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

/// Whether `pid` is still the process that started at `start` (not exited, not a zombie).
fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && matches!(proc_stat(pid), Some((s, zombie)) if s == start && !zombie)
}

fn status_of(dir: &Path, pid: i32, start: u64, cgroup: Option<&Cgroup>) -> Status {
    if !alive(pid, start) {
        return Status::Stopped;
    }
    if dir.join("exec.fifo").exists() {
        return Status::Created;
    }
    if cgroup.is_some_and(|cg| cg.is_frozen().unwrap_or(false)) {
        return Status::Paused;
    }
    Status::Running
}

/// The part of `state.json` that `list` needs: the stored config is skipped while parsing
/// except for its annotations, which keeps `list` over many containers small and fast.
#[derive(Debug, Deserialize)]
struct Summary {
    id: String,
    init_pid: i32,
    init_start_time: u64,
    bundle: PathBuf,
    rootfs: PathBuf,
    created: String,
    owner: String,
    #[serde(default)]
    cgroup: Option<Cgroup>,
    config: SummaryConfig,
    #[serde(default)]
    creating: bool,
}

#[derive(Debug, Deserialize)]
struct SummaryConfig {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The runtime-spec state of every container under `root`, sorted by id; unreadable entries
/// are skipped with a warning.
pub fn list_states(root: &Path) -> Result<Vec<OciState>, ContainerError> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {}", root.display()))(e)),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let dir = entry.path();
        let data = match std::fs::read(dir.join("state.json")) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", dir.display());
                continue;
            }
        };
        let s: Summary = match serde_json::from_slice(&data) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("skipping {}: corrupt state: {e}", dir.display());
                continue;
            }
        };
        let mut status = status_of(&dir, s.init_pid, s.init_start_time, s.cgroup.as_ref());
        if s.creating && status != Status::Stopped {
            status = Status::Creating;
        }
        out.push(OciState {
            oci_version: crate::spec::OCI_VERSION.into(),
            pid: if status == Status::Stopped {
                0
            } else {
                s.init_pid
            },
            id: s.id,
            status,
            bundle: s.bundle,
            rootfs: s.rootfs,
            created: s.created,
            owner: s.owner,
            annotations: s.config.annotations,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

pub fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh descriptor that we now own.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        for ok in ["a", "web-1", "x_y.z+1"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_process_stat_is_readable() {
        let (start, zombie) = proc_stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(!zombie);
    }

    #[test]
    fn unknown_container_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = Container::load(dir.path(), "nope").unwrap_err();
        assert_eq!(e.to_string(), "container \"nope\" does not exist");
    }
}
