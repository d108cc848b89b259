//! kapseld: the Kapsel daemon (images, content, snapshots; containers come with issue 5).

use clap::Parser;
use kapsel_manager::config::{self, Config};

/// The Kapsel daemon: serves images, content and snapshots over ttrpc. Runs with an embedded
/// default configuration; flags override it.
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
    /// A root of per-registry certificate directories, `DIR/<host[:port]>/` holding `*.crt`
    /// (CAs) and `*.cert` + `*.key` (client certificate). Repeatable; replaces the defaults
    /// /etc/kapsel/certs.d and /etc/docker/certs.d.
    #[arg(long = "certs-dir", value_name = "DIR")]
    certs_dir: Vec<std::path::PathBuf>,
}

fn main() {
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
