//! kapseld's configuration: an embedded default (no file needed) that flags override.

use std::path::PathBuf;

pub const DEFAULT_ROOT: &str = "/var/lib/kapsel";
pub const DEFAULT_STATE: &str = "/run/kapsel";
pub const DEFAULT_ADDRESS: &str = "/run/kapsel/kapseld.sock";
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Persistent data: `meta.redb`, `content/`, `snapshots/<driver>/`.
    pub root: PathBuf,
    /// Runtime state: the pid file, shim sockets and container FIFOs.
    pub state: PathBuf,
    /// The ttrpc unix socket.
    pub address: PathBuf,
    /// `overlayfs` or `native`.
    pub snapshotter: String,
    /// `error`, `warn`, `info`, `debug`, `trace`.
    pub log_level: String,
    /// Registries whose certificate is not verified and that may be reached over plain HTTP,
    /// besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// `containerd-shim-kapsel-v2` (default: next to kapseld, else on PATH).
    pub shim_binary: Option<PathBuf>,
    /// The OCI runtime the shim runs (default: the shim's, `kapsel-runtime` on PATH).
    pub runtime_binary: Option<PathBuf>,
    /// Roots of the per-registry certificate directories (`<root>/<host[:port]>/`: `*.crt`
    /// CAs, `*.cert` + `*.key` client pairs), searched in order.
    pub certs_dirs: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            address: DEFAULT_ADDRESS.into(),
            snapshotter: DEFAULT_SNAPSHOTTER.into(),
            log_level: "info".into(),
            insecure_registries: Vec::new(),
            shim_binary: None,
            runtime_binary: None,
            certs_dirs: crate::registry::tls::default_certs_dirs(),
        }
    }
}

impl Config {
    pub fn meta_path(&self) -> PathBuf {
        self.root.join("meta.redb")
    }
    pub fn content_root(&self) -> PathBuf {
        self.root.join("content")
    }
    pub fn snapshots_root(&self) -> PathBuf {
        self.root.join("snapshots").join(&self.snapshotter)
    }
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("kapseld.lock")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.state.join("kapseld.pid")
    }
}
