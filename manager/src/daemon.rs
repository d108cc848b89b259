//! kapseld: opens the components in `Config`'s directories, serves the ttrpc API on the unix
//! socket and stops cleanly on SIGTERM or SIGINT.
//!
//! One daemon per root: `<root>/kapseld.lock` is flocked for the daemon's life (the metadata
//! database and the snapshotter lock their own files too), and `<state>/kapseld.pid` names it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};

use crate::config::Config;
use crate::content::local::LocalStore;
use crate::events::Events;
use crate::images::{jobs::Jobs, Service};
use crate::metadata::{self, Db};
use crate::services::{self, DaemonInfo};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("root {root} is in use by another kapseld{}: stop it first or use another --root", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { root: PathBuf, pid: Option<u32> },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Metadata(#[from] metadata::Error),
    #[error("content store: {0}")]
    Content(#[from] crate::content::Error),
    #[error("snapshotter: {0}")]
    Snapshotter(#[from] crate::snapshots::OpenError),
    #[error("serving {address}: {source}")]
    Serve {
        address: PathBuf,
        #[source]
        source: kapsel_proto::ttrpc::Error,
    },
    #[error("signals: {0}")]
    Signals(#[source] nix::Error),
    #[error("volumes: {0}")]
    Volumes(#[from] crate::volumes::Error),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(io("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// Takes the root's lock; fails with the holder's pid when another daemon has it.
fn lock_root(cfg: &Config) -> Result<Flock<File>, Error> {
    let path = cfg.lock_path();
    let f = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(mut l) => {
            // The holder's pid, for the error a second daemon reports (its --state may differ).
            let _ = l.set_len(0);
            let _ = writeln!(&mut *l, "{}", std::process::id());
            Ok(l)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Locked {
            root: cfg.root.clone(),
            pid: std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }),
        Err((_, e)) => Err(io("flock", &path)(std::io::Error::from(e))),
    }
}

/// The components, opened.
pub fn open_service(cfg: &Config) -> Result<Arc<Service>, Error> {
    let store = LocalStore::open(&cfg.content_root())?;
    let snapshotter = crate::snapshots::open(&cfg.snapshotter, &cfg.snapshots_root())?;
    let db = Db::open(&cfg.meta_path())?;
    Ok(Arc::new(Service {
        db,
        store: Arc::new(store),
        content_root: cfg.content_root(),
        snapshotter: Arc::from(snapshotter),
        events: Events::new(),
        jobs: Jobs::default(),
        gc_lock: std::sync::Mutex::new(()),
        insecure: cfg.insecure_registries.clone(),
        certs_dirs: cfg.certs_dirs.clone(),
        platform: crate::registry::default_platform(),
    }))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), Error> {
    // Signals are taken synchronously by this thread: block them before any thread exists so
    // every thread inherits the mask.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    signals.thread_block().map_err(Error::Signals)?;

    mkdir(&cfg.root, 0o711)?;
    mkdir(&cfg.state, 0o711)?;
    if let Some(dir) = cfg.address.parent() {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    }
    let lock = lock_root(&cfg)?;
    let pid_path = cfg.pid_path();
    {
        let mut f = File::create(&pid_path).map_err(io("write", &pid_path))?;
        writeln!(f, "{}", std::process::id()).map_err(io("write", &pid_path))?;
    }
    let svc = open_service(&cfg)?;

    // No job survives a restart: leases of pulls a crash interrupted protect nothing now.
    for (ns, lease) in svc.db.leases()? {
        tracing::info!(
            namespace = ns.as_str(),
            lease = lease.id.as_str(),
            "dropping the lease of an interrupted job"
        );
        if let Err(e) = svc.db.delete_lease(&ns, &lease.id) {
            tracing::warn!("{e}");
        }
    }
    match svc.collect() {
        Ok(_) => {}
        Err(e) => tracing::warn!("garbage collection at start: {e}"),
    }

    // A socket left by a daemon that died: we hold the root's lock, so nobody serves it.
    match std::fs::remove_file(&cfg.address) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove stale socket", &cfg.address)(e)),
    }
    let info = Arc::new(DaemonInfo {
        root: cfg.root.display().to_string(),
        state: cfg.state.display().to_string(),
        address: cfg.address.display().to_string(),
        log_level: cfg.log_level.clone(),
    });
    let serve_err = |source| Error::Serve {
        address: cfg.address.clone(),
        source,
    };
    let mut server = kapsel_proto::ttrpc::Server::new()
        .bind(&format!("unix://{}", cfg.address.display()))
        .map_err(serve_err)?;
    let ctrs = crate::containers::Containers::new(
        svc.clone(),
        crate::containers::Paths {
            root: cfg.root.clone(),
            state: cfg.state.clone(),
            daemon_address: cfg.address.clone(),
            shim_binary: cfg
                .shim_binary
                .clone()
                .unwrap_or_else(|| crate::containers::sibling_binary("containerd-shim-kapsel-v2")),
            runtime_binary: cfg.runtime_binary.clone(),
            logger_binary: crate::containers::sibling_binary("kapsel-logger"),
            init_binary: crate::containers::find_init_binary(),
        },
    );
    // Before serving: volume directories a crash left without a record go.
    ctrs.volumes().recover()?;
    for m in services::methods(svc.clone(), ctrs.clone(), info, Some(ctrs.event_sink())) {
        server = server.register_service(m);
    }
    std::fs::set_permissions(&cfg.address, std::fs::Permissions::from_mode(0o660))
        .map_err(io("chmod", &cfg.address))?;
    server.start().map_err(serve_err)?;
    // After the server is up: the shims of recovered containers send their events to it.
    ctrs.recover();
    tracing::info!(
        address = %cfg.address.display(),
        root = %cfg.root.display(),
        snapshotter = cfg.snapshotter.as_str(),
        pid = std::process::id(),
        "kapseld started"
    );

    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => {
                tracing::info!("SIGHUP ignored (no configuration file to reload)")
            }
            Ok(sig) => {
                tracing::info!("{sig} received: shutting down");
                break;
            }
            Err(e) => return Err(Error::Signals(e)),
        }
    }
    server.shutdown();
    let _ = std::fs::remove_file(&cfg.address);
    let _ = std::fs::remove_file(&pid_path);
    // The database flushes on drop; the lock goes last.
    drop(svc);
    drop(lock);
    tracing::info!("kapseld stopped");
    Ok(())
}
