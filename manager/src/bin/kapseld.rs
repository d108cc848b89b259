//! kapseld: the Kapsel daemon (images, content, snapshots, containers and their tasks).

use clap::Parser;
use kapsel_manager::config::{self, Config};

/// The Kapsel daemon: serves images, content, snapshots, containers and tasks over ttrpc. Runs
/// with an embedded default configuration; flags override it.
#[derive(Parser, Debug)]
#[command(name = "kapseld", version)]
struct Args {
    /// Persistent data (metadata database, content store, snapshots).
    #[arg(long, default_value = config::DEFAULT_ROOT)]
    root: std::path::PathBuf,
    /// Runtime state (pid file).
    #[arg(long, default_value = config::DEFAULT_STATE)]
    state: std::path::PathBuf,
    /// The unix socket to serve the API on.
    #[arg(long, short = 'a', default_value = config::DEFAULT_ADDRESS)]
    address: std::path::PathBuf,
    /// overlayfs or native.
    #[arg(long, default_value = config::DEFAULT_SNAPSHOTTER)]
    snapshotter: String,
    /// error, warn, info, debug or trace.
    #[arg(long, short = 'l', default_value = "info")]
    log_level: String,
    /// A registry (host[:port]) whose TLS certificate is not verified and that is reached over
    /// plain HTTP when it does not speak TLS (loopback registries are reached over plain HTTP
    /// unless they speak TLS, and then verified). Repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// containerd-shim-kapsel-v2 to run tasks with (default: next to kapseld, else on PATH).
    #[arg(long, env = "KAPSEL_SHIM")]
    shim: Option<std::path::PathBuf>,
    /// The OCI runtime the shim runs (default: kapsel-runtime on PATH).
    #[arg(long, env = "KAPSEL_RUNTIME")]
    runtime: Option<std::path::PathBuf>,
    /// A root of per-registry certificate directories, `DIR/<host[:port]>/` holding `*.crt`
    /// (CAs) and `*.cert` + `*.key` (client certificate). Repeatable; replaces the defaults
    /// /etc/kapsel/certs.d and /etc/docker/certs.d.
    #[arg(long = "certs-dir", value_name = "DIR")]
    certs_dir: Vec<std::path::PathBuf>,
}

fn main() {
    limit_malloc_arenas();
    let a = Args::parse();
    let Some(level) = kapsel_manager::log::parse_level(&a.log_level) else {
        eprintln!(
            "kapseld: invalid --log-level {:?}: use error, warn, info, debug or trace",
            a.log_level
        );
        std::process::exit(1);
    };
    if !matches!(a.snapshotter.as_str(), "overlayfs" | "overlay" | "native") {
        eprintln!(
            "kapseld: unknown --snapshotter {:?}: use overlayfs or native",
            a.snapshotter
        );
        std::process::exit(1);
    }
    kapsel_manager::log::init(level);
    let cfg = Config {
        root: a.root,
        state: a.state,
        address: a.address,
        snapshotter: if a.snapshotter == "overlay" {
            "overlayfs".into()
        } else {
            a.snapshotter
        },
        log_level: a.log_level,
        insecure_registries: a.insecure_registry,
        shim_binary: a.shim,
        runtime_binary: a.runtime,
        certs_dirs: if a.certs_dir.is_empty() {
            kapsel_manager::registry::tls::default_certs_dirs()
        } else {
            a.certs_dir
        },
    };
    if let Err(e) = kapsel_manager::daemon::run(cfg) {
        eprintln!("kapseld: {e}");
        std::process::exit(1);
    }
}

/// kapseld keeps a few threads per running container (its shim connection, the exit waiter):
/// glibc would give each thread its own malloc arena, which with 50 containers grew the daemon
/// from 21 MB to 102 MB of RSS. Two arenas serve its allocation pattern (bursts in pulls,
/// little elsewhere). `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes glibc's allocator and is called before any other thread
        // exists; a refusal (return 0) leaves the default, which is still correct.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
