//! Snapshotters: layered filesystem trees in containerd's model.
//!
//! A snapshot is named by a caller-chosen key. [`Snapshotter::prepare`] makes an *active*
//! (writable) snapshot on top of an optional committed parent, [`Snapshotter::view`] a read-only
//! one; [`Snapshotter::commit`] turns an active snapshot into an immutable *committed* one under a
//! new name, which can then be the parent of others. The caller gets [`Mount`]s, never paths: it
//! mounts them (with [`mount_all`]) where it needs the tree, e.g. to unpack a layer into it, or
//! hands them to the shim as the container's rootfs mounts (containerd's task API carries the
//! same four fields).
//!
//! # On-disk layout (shared by `overlayfs` and `native`)
//!
//! ```text
//! <root>/
//!   lock                      flock(LOCK_EX) held by the one process using this root
//!   snapshots/
//!     <id>/                   a live snapshot; <id> is a decimal number, never reused while live
//!       meta.json             {"id","name","parent","kind","created","labels","usage"}
//!       fs/                   the tree: overlay upperdir (or the whole tree for native)
//!       work/                 overlay workdir (overlayfs only)
//!     new-<id>/               a snapshot being created (crash: removed at the next open)
//!     trash-<id>/             a snapshot being removed (crash: removed at the next open)
//! ```
//!
//! The snapshot name → id map lives in memory, rebuilt from the `meta.json` files at open. Every
//! change is atomic on disk: a new snapshot is assembled under `new-<id>` and renamed to `<id>`;
//! `meta.json` is rewritten as a temporary file, fsynced and renamed (commit, label updates); a
//! removal first renames `<id>` to `trash-<id>` and deletes afterwards. A crash at any point thus
//! leaves either the old or the new state plus leftovers the next open deletes. Parents are
//! recorded by name; a committed name never changes and a snapshot with children cannot be
//! removed, so parent links stay valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

mod meta;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod testsuite;

pub use mount::{mount_all, unmount_all, MountError, MountGuard};
pub use native::NativeSnapshotter;
pub use overlay::OverlaySnapshotter;

/// Snapshot labels (containerd's `containerd.io/gc.*` conventions apply).
pub type Labels = BTreeMap<String, String>;

/// The kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only, made by [`Snapshotter::view`]; cannot be committed.
    View,
    /// Writable, made by [`Snapshotter::prepare`]; becomes committed by [`Snapshotter::commit`].
    Active,
    /// Immutable; the only kind that can be a parent.
    Committed,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        })
    }
}

/// What a snapshotter knows about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    pub created: SystemTime,
    pub labels: Labels,
}

/// Disk usage of the snapshot's own layer (not its parents): bytes allocated and inodes
/// (hard-linked files counted once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// One mount, with containerd's conventions: `kind` is the filesystem type (`overlay`, `bind`),
/// `source` the device or directory, `options` the `mount -o` list (flags such as `ro`, `rbind`
/// and filesystem data such as `lowerdir=`), `target` a path relative to where the list is
/// mounted (`None`: that place itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("snapshot {key:?} has {} children ({}): remove them first", children.len(), children.join(", "))]
    HasChildren { key: String, children: Vec<String> },
    #[error("snapshot {key:?} is {kind}, only an active snapshot can be committed")]
    NotActive { key: String, kind: Kind },
    #[error("parent {parent:?} is {kind}, only a committed snapshot can be a parent")]
    ParentNotCommitted { parent: String, kind: Kind },
    #[error("invalid snapshot key {0:?}: must be non-empty, without NUL")]
    InvalidKey(String),
    #[error("snapshotter root {root} is in use by another process (lock held)")]
    Locked { root: PathBuf },
    #[error("snapshot metadata {path} is corrupt: {source}; move it away or remove the snapshot directory")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshotter {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A snapshotter in containerd's model. Keys and names share one namespace per snapshotter.
pub trait Snapshotter: Send + Sync {
    /// `overlayfs` or `native` (what `kapsel info` shows as the storage driver).
    fn driver(&self) -> &'static str;
    /// The directory holding every snapshot.
    fn root(&self) -> &Path;
    fn stat(&self, key: &str) -> Result<Info>;
    /// Replaces the labels of a snapshot.
    fn update_labels(&self, key: &str, labels: Labels) -> Result<Info>;
    /// Usage of the snapshot's own layer; stored at commit for committed snapshots, measured
    /// now for active ones.
    fn usage(&self, key: &str) -> Result<Usage>;
    /// The mounts of an existing snapshot (the same as `prepare` or `view` returned).
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// Creates an active (writable) snapshot `key` on top of the committed `parent`.
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;
    /// Creates a read-only snapshot `key` showing the committed `parent`.
    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;
    /// Turns the active snapshot `key` into the committed snapshot `name`; `key` goes away.
    /// The caller must have unmounted it.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;
    /// Removes a snapshot that has no children; the caller must have unmounted it.
    fn remove(&self, key: &str) -> Result<()>;
    /// Every snapshot, parents before their children.
    fn walk(&self) -> Result<Vec<Info>>;
}

/// Opens the snapshotter named `driver` (`overlayfs` or `native`) at `root`.
pub fn open(driver: &str, root: &Path) -> Result<Box<dyn Snapshotter>, OpenError> {
    match driver {
        "overlayfs" | "overlay" => Ok(Box::new(OverlaySnapshotter::open(root)?)),
        "native" => Ok(Box::new(NativeSnapshotter::open(root)?)),
        other => Err(OpenError::UnknownDriver(other.to_string())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unknown snapshotter {0:?}: use overlayfs or native")]
    UnknownDriver(String),
    #[error(transparent)]
    Snapshot(#[from] Error),
}
