//! The three lives of the shim binary: `start` (spawn the daemon, print its address), the daemon
//! itself (serve the task API until Shutdown), and `delete` (clean up after a dead daemon).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use sha2::{Digest, Sha256};

use crate::args::Args;
use crate::events::{PublishTarget, Publisher};
use crate::reaper::Reaper;
use crate::runtime::Runtime;
use crate::service::Service;

/// Environment variable through which `start` hands the bound socket to the daemon.
const LISTEN_FD_ENV: &str = "KAPSEL_SHIM_LISTEN_FD";
/// After this long without a call, the shim trims its resident text.
const IDLE_TRIM: std::time::Duration = std::time::Duration::from_secs(5);
/// Where containerd (1.6) expects shim sockets.
const SOCKET_DIR: &str = "/run/containerd/s";

/// Shim failures at the process edge.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ttrpc server: {0}")]
    Ttrpc(#[from] ttrpc::Error),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
    let what = what.into();
    move |source| ShimError::Io { what, source }
}

/// The socket path for one shim: a hash of containerd's address, the namespace and the id,
/// as containerd's own shims name theirs.
pub fn socket_path(address: &str, namespace: &str, id: &str) -> PathBuf {
    let key = Path::new(address).join(namespace).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SOCKET_DIR).join(hex)
}

fn set_cloexec(fd: RawFd, on: bool) -> Result<(), ShimError> {
    // SAFETY: `fd` is a descriptor this process owns for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(|e| ShimError::Io {
            what: "fcntl F_SETFD".into(),
            source: e.into(),
        })
}

/// The annotation CRI sets on every container of a pod: containers with the same value share
/// one shim, as containerd's runc shim does.
const GROUP_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The shim group of the bundle in `bundle`: the pod's sandbox id, else the container's own id.
fn group_of(bundle: &Path, id: &str) -> String {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.pointer("/annotations")?
                .get(GROUP_ANNOTATION)?
                .as_str()
                .map(String::from)
        })
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// `start`: bind the socket, spawn the daemon in its own session, write `address`, print it.
/// When a shim of the same group already serves, its address is the answer.
pub fn start(args: &Args) -> Result<(), ShimError> {
    let group = group_of(Path::new("."), &args.id);
    let path = socket_path(&args.address, &args.namespace, &group);
    let address = format!("unix://{}", path.display());
    std::fs::create_dir_all(SOCKET_DIR).map_err(io_err(format!("create {SOCKET_DIR}")))?;
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            // A shim for this task already serves there.
            std::fs::write("address", &address).map_err(io_err("write address"))?;
            print!("{address}");
            return Ok(());
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(io_err(format!("bind {}", path.display())))?;
    set_cloexec(listener.as_raw_fd(), false)?;

    let exe = std::env::current_exe().map_err(io_err("find own executable"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("-namespace")
        .arg(&args.namespace)
        .arg("-id")
        .arg(&args.id)
        .arg("-address")
        .arg(&args.address)
        .arg("-socket")
        .arg(&path);
    if let Some(p) = &args.publish_binary {
        cmd.arg("-publish-binary").arg(p);
    }
    if args.debug {
        cmd.arg("-debug");
    }
    // The daemon must not hold containerd's pipe on our stdout, or containerd waits forever.
    let log = open_shim_log();
    // One malloc arena: per-thread arenas cost an idle shim RSS for nothing.
    cmd.env(LISTEN_FD_ENV, listener.as_raw_fd().to_string())
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map_or_else(Stdio::null, Stdio::from));
    let child = cmd.spawn().map_err(io_err("spawn shim daemon"));
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    std::fs::write("address", &address).map_err(io_err("write address"))?;
    std::fs::write("shim.pid", child.id().to_string()).map_err(io_err("write shim.pid"))?;
    print!("{address}");
    let _ = std::io::stdout().flush();
    Ok(())
}

/// containerd's `log` FIFO in the bundle, if it has a reader.
fn open_shim_log() -> Option<OwnedFd> {
    let fd = nix::fcntl::open(
        "log",
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let flags = fcntl(&fd, FcntlArg::F_GETFL).ok()?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.remove(OFlag::O_NONBLOCK);
    fcntl(&fd, FcntlArg::F_SETFL(flags)).ok()?;
    Some(fd)
}

/// The daemon: serve the task API until Shutdown.
pub fn serve(args: &Args) -> Result<(), ShimError> {
    let fd: RawFd = std::env::var(LISTEN_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ShimError::Io {
            what: format!("{LISTEN_FD_ENV} not set: run the shim through `start`"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    std::env::remove_var(LISTEN_FD_ENV);
    std::env::remove_var("MALLOC_ARENA_MAX");
    set_cloexec(fd, true)?;
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| ShimError::Io {
        what: "become child subreaper".into(),
        source: e.into(),
    })?;

    // Before any thread starts, so that all of them keep SIGCHLD blocked for the reaper.
    let reaper = Reaper::start().map_err(io_err("start reaper"))?;
    let publisher = match &args.publish_binary {
        Some(binary) => Publisher::start(
            PublishTarget {
                binary: binary.clone(),
                // containerd 1.6's `publish` dials the gRPC address, not TTRPC_ADDRESS.
                address: args.address.clone(),
                ttrpc_address: std::env::var("TTRPC_ADDRESS")
                    .ok()
                    .filter(|a| !a.is_empty()),
                namespace: args.namespace.clone(),
            },
            reaper.clone(),
        )
        .map_err(io_err("start publisher"))?,
        None => Publisher::disabled(),
    };
    let (tx, rx) = mpsc::channel();
    let service = Arc::new(Service::new(&args.namespace, reaper, publisher.clone(), tx));
    let mut server = ttrpc::Server::new()
        .add_listener(fd)?
        .register_service(containerd_shim_protos::create_task(service))
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3);
    server.start()?;
    crate::memory::trim();
    // Idle: trim what the calls since the last trim faulted in, once they have stopped coming.
    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(IDLE_TRIM) {
        if crate::memory::take_activity() {
            crate::memory::trim();
        }
    }
    // The socket's name goes first: from now on a connect fails at once, so a client waiting
    // for this shim to be gone (a restart, a new `start` for the same id) need not wait for
    // the steps below. Established connections are not affected by the unlink.
    let path = args
        .socket
        .clone()
        .unwrap_or_else(|| socket_path(&args.address, &args.namespace, &args.id));
    let _ = std::fs::remove_file(path);
    publisher.flush(std::time::Duration::from_secs(5));
    // Let the Shutdown reply reach its caller before the process (and its connections) go.
    std::thread::sleep(std::time::Duration::from_millis(20));
    Ok(())
}

/// `delete`: the daemon is gone; force-delete the container, unmount, report.
pub fn delete(args: &Args) -> Result<(), ShimError> {
    let bundle = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(io_err("current directory"))?,
    };
    let reaper = Reaper::start().map_err(io_err("start reaper"))?;
    let runtime = Runtime::load(&bundle, &args.namespace);
    // The container may already be gone; cleanup continues either way.
    let _ = runtime.output(&reaper, &["delete", "--force", &args.id], None);
    let _ = std::fs::remove_dir(&runtime.root);
    crate::mount::unmount_all(&bundle.join("rootfs"));
    // Only this container's own shim socket: a group's shim may still serve its other members.
    let _ = std::fs::remove_file(socket_path(&args.address, &args.namespace, &args.id));
    let mut resp = DeleteResponse::new();
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = Some(Timestamp::now()).into();
    let bytes = resp.write_to_bytes().map_err(|e| ShimError::Io {
        what: "encode DeleteResponse".into(),
        source: std::io::Error::other(e),
    })?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(io_err("write DeleteResponse"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_stable_and_distinct() {
        let a = socket_path("/run/containerd/containerd.sock", "default", "k1");
        let b = socket_path("/run/containerd/containerd.sock", "default", "k1");
        let c = socket_path("/run/containerd/containerd.sock", "default", "k2");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with(SOCKET_DIR));
        assert_eq!(a.file_name().unwrap().len(), 64);
    }

    #[test]
    fn group_is_the_sandbox_annotation_else_the_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "c1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod7"}}"#,
        )
        .unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "pod7");
        std::fs::write(dir.path().join("config.json"), r#"{"annotations":{}}"#).unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "c1");
    }

    #[test]
    fn cloexec_toggles() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        set_cloexec(r.as_raw_fd(), false).unwrap();
        set_cloexec(r.as_raw_fd(), true).unwrap();
    }
}
