//! Containers: records in the metadata database (`metadata::ContainerRecord`), a snapshot per
//! container on top of its image, the OCI spec and bundle, tasks through
//! `containerd-shim-kapsel-v2`, logs through the json-file logger, restart policies and the
//! recovery of running containers when kapseld starts again.
//!
//! Where things live (`root` = kapseld's `--root`, `state` = `--state`):
//!
//! | path | what |
//! |---|---|
//! | `<root>/containers/<id>/` | `<id>-json.log*`, `hostname`, `hosts`, `resolv.conf` |
//! | `<root>/volumes/<name>/_data` | the volumes it mounts (`crate::volumes`), kept by `rm` |
//! | `<state>/tasks/<ns>/<id>/` | the bundle: `config.json`, `rootfs/` (the shim mounts it), the shim's `address` |
//! | `<state>/fifo/<id>/` | `stdin` (kapseld holds it open for writing), `<exec>-{stdin,stdout,stderr}` |
//!
//! A task exists only while the container runs: `start` starts a shim and creates the task,
//! its exit deletes the task and stops the shim (Docker's model: a created or exited container
//! has no shim).
//!
//! How kapseld learns that a task ended, with no thread per running container:
//! - the shim's `/tasks/exit` event for the init process (Forward on kapseld's socket), handled
//!   on a short-lived thread: task deleted, shim shut down and gone, logger drained, then the
//!   container is exited (`--rm`, restart policy);
//! - one thread polls a pidfd of every shim and task init process (`tasks::watch`): a shim that
//!   dies is cleaned up after (`shim delete`) and its container exits 137 with a State.Error
//!   naming the shim; an init that ended without an exit event within 3 s (the event was lost)
//!   is looked up with the shim's State;
//! - at kapseld's start, recovery asks each reconnected shim for its task's State: a task that
//!   exited while kapseld was down is handled before any request is served.
//!
//! Task API calls connect to the shim for each call (or a burst: connect, create, start), so an
//! idle container holds no connection either.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::images::{self, code};
use crate::metadata::{self, ContainerRecord, ContainerStatus};
use crate::snapshots;

mod loopback;
pub mod options;
pub mod restart;
pub mod seccomp_default;
mod service;
pub mod spec;
pub mod user;

pub use options::{NetworkMode, RestartPolicy, RunOptions};
pub use service::{
    exit_code_for_start_error, Containers, ExecOptions, LogsRequest, LogsResponse, Summary,
    WaitResult,
};
pub use spec::{
    create_workdir, find_init_binary, generate, prepare_container_dir, stop_signal, SpecContext,
    SpecError, VolumeNeed, VolumeSource,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("multiple containers match {0:?}: give more of the id, or the name")]
    Ambiguous(String),
    #[error("no such image: {0}: pull or load it first")]
    NoSuchImage(String),
    #[error("{0}")]
    Image(#[from] images::Error),
    #[error("{0}")]
    Metadata(#[from] metadata::Error),
    #[error("snapshot of container {id}: {source}")]
    Snapshot {
        id: String,
        #[source]
        source: snapshots::Error,
    },
    #[error("unpacking image {image}: {source}")]
    Unpack {
        image: String,
        #[source]
        source: crate::unpack::Error,
    },
    #[error("{0}")]
    Mount(#[from] snapshots::mount::MountError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Volume(Box<crate::volumes::Error>),
    #[error("you cannot remove a running container {0}: stop the container before attempting removal or force remove")]
    RemoveRunning(String),
    #[error("container {0} is not running: start it first (kapsel start {0})")]
    NotRunning(String),
    #[error("container {0} is paused: unpause the container first")]
    Paused(String),
    #[error("container {0} is restarting: wait until the container is running")]
    Restarting(String),
    #[error("no such exec instance {exec} in container {id}")]
    ExecNotFound { id: String, exec: String },
    #[error("container {id}: {what}: {detail}")]
    Task {
        id: String,
        what: &'static str,
        detail: String,
    },
}

impl Error {
    /// The status code a client sees.
    pub fn code(&self) -> i32 {
        match self {
            Error::NotFound(_)
            | Error::NoSuchImage(_)
            | Error::ExecNotFound { .. }
            | Error::Metadata(metadata::Error::ContainerNotFound { .. }) => code::NOT_FOUND,
            Error::Ambiguous(_) | Error::InvalidArgument(_) => code::INVALID_ARGUMENT,
            Error::Metadata(metadata::Error::ContainerNameInUse { .. })
            | Error::Metadata(metadata::Error::ContainerExists { .. }) => code::ALREADY_EXISTS,
            Error::RemoveRunning(_)
            | Error::NotRunning(_)
            | Error::Paused(_)
            | Error::Restarting(_) => code::FAILED_PRECONDITION,
            Error::Image(e) => e.code(),
            Error::Volume(e) => e.code(),
            _ => code::INTERNAL,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where kapseld keeps container files and finds its helper binaries.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub state: PathBuf,
    /// kapseld's socket (shims send their events there).
    pub daemon_address: PathBuf,
    pub shim_binary: PathBuf,
    /// `None`: the shim's default (`kapsel-runtime` on its PATH).
    pub runtime_binary: Option<PathBuf>,
    pub logger_binary: PathBuf,
    pub init_binary: Option<PathBuf>,
}

impl Paths {
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }
    pub fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join("tasks").join(ns).join(id)
    }
    pub fn fifo_dir(&self, id: &str) -> PathBuf {
        self.state.join("fifo").join(id)
    }
}

/// A binary next to the running executable, else `name` for PATH lookup.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// `SIGTERM`, `TERM`, `term`, `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    options::parse_signal(s).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "invalid signal {s:?}: use a name like SIGTERM or a number"
        ))
    })
}

/// Docker's rule for the names of containers and volumes: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Docker's rule for container names.
pub fn validate_name(name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// A random `adjective_surname` name, as Docker gives (our own word lists).
pub fn generate_name(seed: u64) -> String {
    const LEFT: &[&str] = &[
        "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "quiet", "sharp", "stoic", "tender", "vivid", "witty", "zealous",
    ];
    const RIGHT: &[&str] = &[
        "ada", "babbage", "curie", "dijkstra", "euler", "fermi", "gauss", "hopper", "kepler",
        "lamarr", "lovelace", "noether", "pascal", "ritchie", "shannon", "thompson", "turing",
        "wozniak",
    ];
    let l = LEFT[(seed % LEFT.len() as u64) as usize];
    let r = RIGHT[((seed / LEFT.len() as u64) % RIGHT.len() as u64) as usize];
    format!("{l}_{r}")
}

/// 64 random hex digits.
pub fn new_id() -> String {
    (0..4).map(|_| crate::unpack::random_hex()).collect()
}

/// Docker's STATUS column: `Up 5 seconds`, `Up 2 minutes (Paused)`, `Exited (0) 3 seconds
/// ago`, `Restarting (1) 1 second ago`, `Created`, `Dead`.
pub fn status_text(rec: &ContainerRecord, now: i64) -> String {
    use crate::images::time::human_duration;
    let s = &rec.state;
    match s.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running => format!("Up {}", human_duration(now - s.started_at)),
        ContainerStatus::Paused => format!("Up {} (Paused)", human_duration(now - s.started_at)),
        ContainerStatus::Restarting => format!(
            "Restarting ({}) {} ago",
            s.exit_code,
            human_duration(now - s.finished_at)
        ),
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            human_duration(now - s.finished_at)
        ),
        ContainerStatus::Dead => "Dead".into(),
    }
}

/// The command as `ps` shows it: entrypoint and cmd of the spec's process.
pub fn command_of(rec: &ContainerRecord) -> String {
    rec.spec
        .pointer("/process/args")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn names_follow_docker_rules() {
        validate_name("web").unwrap();
        validate_name("a.b_c-d").unwrap();
        assert!(validate_name("-web").is_err());
        assert!(validate_name("w").is_err());
        assert!(validate_name("we b").is_err());
        let n = generate_name(12345);
        validate_name(&n).unwrap();
        assert!(n.contains('_'));
        assert_eq!(new_id().len(), 64);
    }
}
