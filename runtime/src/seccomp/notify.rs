//! The parent's side of SCMP_ACT_NOTIFY: take the listener out of the container process and
//! hand it to the seccomp agent at `linux.seccomp.listenerPath`.
//!
//! The contract is runc's (runtime-spec "containerProcessState"): connect a stream socket to
//! listenerPath, and send in one message the JSON
//! `{"ociVersion", "fds": ["seccompFd"], "pid", "metadata", "state"}` with the listener
//! attached as SCM_RIGHTS. `pid` is the process that loaded the filter (init, or the `exec`
//! process), `state` the container's state. The parent does it, not init: the socket path is a
//! host path, and the parent knows the pids as the host sees them.

use crate::spec::Seccomp;
use serde::Serialize;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The name of the listener in `fds`.
pub const SECCOMP_FD_NAME: &str = "seccompFd";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("a seccomp listener arrived, but linux.seccomp has no listenerPath")]
    NoListenerPath,
    #[error("take the seccomp listener (descriptor {fd}) from pid {pid}: {source}")]
    Take {
        pid: i32,
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("connect to the seccomp agent at {path} (linux.seccomp.listenerPath): {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("send the seccomp listener to the agent at {path}: {source}")]
    Send {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the agent receives with the listener.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProcessState {
    pub oci_version: String,
    pub fds: Vec<String>,
    pub pid: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    pub state: serde_json::Value,
}

impl ContainerProcessState {
    pub fn new(profile: &Seccomp, pid: i32, state: serde_json::Value) -> Self {
        ContainerProcessState {
            oci_version: crate::spec::OCI_VERSION.into(),
            fds: vec![SECCOMP_FD_NAME.into()],
            pid,
            metadata: profile.listener_metadata.clone().unwrap_or_default(),
            state,
        }
    }
}

/// Copies descriptor `fd` of process `pid` into this one (`pidfd_getfd(2)`, Linux 5.6).
pub fn take_fd(pid: i32, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes descriptors and flags.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, a new descriptor (close-on-exec) that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// Connects to the agent at `path` and sends `msg` with `listener` attached.
pub fn send_to_agent(
    path: &std::path::Path,
    msg: &ContainerProcessState,
    listener: &OwnedFd,
) -> Result<(), NotifyError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let sock =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| NotifyError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let body = serde_json::to_vec(msg).map_err(|e| NotifyError::Send {
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    let fds = [listener.as_raw_fd()];
    let iov = [io::IoSlice::new(&body)];
    let sent = sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| NotifyError::Send {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    if sent != body.len() {
        return Err(NotifyError::Send {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::WriteZero, "short write"),
        });
    }
    Ok(())
}

/// The parent's whole step on `Message::SeccompListener(fd)` from process `pid`: take the
/// listener and send it with `state` (the container's OCI state) to the agent.
pub fn forward(
    profile: &Seccomp,
    state: serde_json::Value,
    pid: i32,
    fd: RawFd,
) -> Result<(), NotifyError> {
    let path = profile
        .listener_path
        .as_deref()
        .ok_or(NotifyError::NoListenerPath)?;
    let listener = take_fd(pid, fd).map_err(|source| NotifyError::Take { pid, fd, source })?;
    send_to_agent(
        path,
        &ContainerProcessState::new(profile, pid, state),
        &listener,
    )
}
