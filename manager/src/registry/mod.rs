//! An OCI distribution (registry) client: pull into and push from a [`content::Store`].
//!
//! Blocking, with threads for parallel blobs. HTTPS, as Docker does, verified against the system
//! CAs and the registry's `certs.d` directory (see [`tls`]); loopback registries in plain HTTP
//! unless their first answer shows they speak TLS; the ones listed as insecure in HTTPS
//! unverified, or plain HTTP when they do not speak TLS.
//! Authentication: anonymous, basic and bearer tokens (cached per scope); credentials come from
//! the caller (see [`auth::lookup`] for the `docker login` style files).
//!
//! Every blob pulled is committed through the store, which verifies its digest and size. Blobs
//! get the label `containerd.io/distribution.source.<registry>=<repository>[,<repository>...]`
//! so a later push to the same registry can mount them across repositories.
//!
//! ```no_run
//! use kapsel_manager::content::local::LocalStore;
//! use kapsel_manager::registry::{self, auth, PullOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = LocalStore::open(std::path::Path::new("/var/lib/kapsel/content"))?;
//! let host = registry::Reference::parse("127.0.0.1:5000/app:1")?.registry;
//! let opts = PullOptions {
//!     credentials: auth::lookup(&host)?,
//!     ..PullOptions::default()
//! };
//! let pulled = registry::pull(&store, "127.0.0.1:5000/app:1", &opts, &|p| eprintln!("{p:?}"))?;
//! registry::push(&store, &pulled.target, "127.0.0.1:5000/copy:1", &Default::default(), &|_| {})?;
//! # Ok(()) }
//! ```

pub mod auth;
mod client;
mod http;
mod pull;
mod push;
pub mod reference;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use auth::Credentials;
pub use pull::{pull, select_manifest};
pub use push::push;
pub use reference::{Reference, ReferenceError};

use crate::content;
use crate::oci::{Descriptor, Digest, Platform};

/// The label prefix recording where a blob came from.
pub const LABEL_SOURCE_PREFIX: &str = "containerd.io/distribution.source.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{reference}: not found")]
    NotFound { reference: String },
    #[error("{reference}: authentication required ({detail}): run kapsel login {host}")]
    AuthRequired {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("{reference}: access denied: {message}")]
    Denied { reference: String, message: String },
    #[error("{reference}: registry error {status} {code}: {message}")]
    Registry {
        reference: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{reference}: {source}")]
    Tls {
        reference: String,
        #[source]
        source: tls::TlsError,
    },
    #[error("{reference}: {url}: {source}")]
    Connection {
        reference: String,
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: {what}")]
    Protocol { reference: String, what: String },
    #[error("{reference}: no manifest for platform {platform} (the image has: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },
    #[error("{reference}: blob {digest}: {source}")]
    Blob {
        reference: String,
        digest: Digest,
        #[source]
        source: content::Error,
    },
    #[error(transparent)]
    Store(content::Error),
    #[error(transparent)]
    Credentials(#[from] auth::AuthError),
    #[error("{reference}: layer {digest}: {message}")]
    LayerHandler {
        reference: String,
        digest: Digest,
        message: String,
    },
    #[error("invalid platform {0:?}: want os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Called with each layer as soon as it and all layers before it are in the store, in order
/// (index, descriptor): lets a caller unpack while later layers still download. An error stops
/// the pull.
pub type LayerHandler =
    Arc<dyn Fn(usize, &Descriptor) -> std::result::Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct PullOptions {
    /// The platform picked from an index (default linux/amd64).
    pub platform: Platform,
    /// Registries whose certificate is not verified and that may be spoken to in plain HTTP,
    /// besides loopback ones (`host:port` or `host`).
    pub insecure: Vec<String>,
    /// Roots of the per-registry certificate directories (`<root>/<host[:port]>/*.crt`).
    pub certs_dirs: Vec<PathBuf>,
    pub credentials: Option<Credentials>,
    /// Blobs downloaded at once.
    pub parallel: usize,
    pub on_layer: Option<LayerHandler>,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform)
            .field("insecure", &self.insecure)
            .field("certs_dirs", &self.certs_dirs)
            .field("credentials", &self.credentials)
            .field("parallel", &self.parallel)
            .field("on_layer", &self.on_layer.is_some())
            .finish()
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: default_platform(),
            insecure: Vec::new(),
            certs_dirs: tls::default_certs_dirs(),
            credentials: None,
            parallel: 4,
            on_layer: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// When the target is an index whose manifests are not all in the store (a pull keeps one
    /// platform), the manifest of this platform is pushed alone under the tag, as Docker does.
    pub platform: Platform,
    pub insecure: Vec<String>,
    pub certs_dirs: Vec<PathBuf>,
    pub credentials: Option<Credentials>,
    pub parallel: usize,
    /// Upload blobs in chunks of this many bytes (PATCH) instead of one PUT.
    pub chunk_size: Option<u64>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            platform: default_platform(),
            insecure: Vec::new(),
            certs_dirs: tls::default_certs_dirs(),
            credentials: None,
            parallel: 4,
            chunk_size: None,
        }
    }
}

/// The platform of this build (linux/amd64 on x86_64).
pub fn default_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: arch.to_string(),
        os: "linux".to_string(),
        os_version: None,
        variant: None,
    }
}

/// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`).
pub fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    let ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
    };
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
        return Err(Error::InvalidPlatform(s.to_string()));
    }
    let arch = match parts[1].to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        a => a.to_string(),
    };
    Ok(Platform {
        os: parts[0].to_ascii_lowercase(),
        architecture: arch,
        os_version: None,
        variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
    })
}

pub fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// What happens to one blob (or manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Queued.
    Waiting,
    /// Already in the store (pull) or in the registry (push): nothing transferred.
    Exists,
    Downloading,
    Uploading,
    /// Mounted from another repository of the registry (push).
    Mounted,
    Done,
}

/// A progress report; `current` counts bytes of `total` for this blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub digest: Digest,
    pub media_type: String,
    pub total: u64,
    pub current: u64,
    pub state: ProgressState,
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    /// The normalised reference pulled (`docker.io/library/busybox:latest`).
    pub name: String,
    /// What the tag (or digest) points at: an index or a manifest.
    pub target: Descriptor,
    /// The platform-specific manifest (equal to `target` when that is a manifest).
    pub manifest: Descriptor,
    pub config: Digest,
    pub layers: Vec<Descriptor>,
}

/// Checks `credentials` against `host`'s `/v2/` (basic or through its token server) without
/// storing them. Store them afterwards with [`auth::ConfigFile`]. `insecure` and `certs_dirs`
/// as in [`PullOptions`].
pub fn login(
    host: &str,
    credentials: &Credentials,
    insecure: &[String],
    certs_dirs: &[PathBuf],
) -> Result<()> {
    let reference = Reference {
        registry: host.to_string(),
        // No repository: errors name the registry alone.
        repository: String::new(),
        tag: None,
        digest: None,
    };
    let s = client::Session::new(&reference, insecure, certs_dirs, Some(credentials.clone()))?;
    let url = s.url("/v2/")?;
    let resp = s.request("GET", &url, &[], client::Source::Empty, &[])?;
    match resp.status {
        200 => {
            resp.discard();
            Ok(())
        }
        _ => Err(s.error(resp, host)),
    }
}

/// Adds `repository` to the distribution source label for `registry` in `labels`.
pub(crate) fn add_source_label(
    labels: &mut BTreeMap<String, String>,
    registry: &str,
    repository: &str,
) {
    let key = format!("{LABEL_SOURCE_PREFIX}{registry}");
    let v = labels.entry(key).or_default();
    if !v.split(',').any(|r| r == repository) {
        if !v.is_empty() {
            v.push(',');
        }
        v.push_str(repository);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = parse_platform("linux/amd64").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant),
            ("linux", "amd64", None)
        );
        let p = parse_platform("linux/arm64/v8").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(platform_string(&p), "linux/arm64/v8");
        assert_eq!(
            parse_platform("linux/x86_64").unwrap().architecture,
            "amd64"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(parse_platform(bad).is_err(), "{bad}");
        }
        assert_eq!(default_platform().os, "linux");
    }

    #[test]
    fn source_labels_accumulate() {
        let mut l = BTreeMap::new();
        add_source_label(&mut l, "127.0.0.1:5000", "a");
        add_source_label(&mut l, "127.0.0.1:5000", "b");
        add_source_label(&mut l, "127.0.0.1:5000", "a");
        assert_eq!(l["containerd.io/distribution.source.127.0.0.1:5000"], "a,b");
    }
}
