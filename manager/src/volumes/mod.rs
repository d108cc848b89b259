//! Volumes, as Docker's `local` driver keeps them: a directory kapseld owns per volume,
//! `<root>/volumes/<name>/_data` (other namespaces than `default` under
//! `<root>/volumes/_ns/<namespace>/<name>/_data`; `_` cannot start a volume name, so the two
//! never meet), bind-mounted into the containers that use it.
//!
//! The records (`metadata::VolumeRecord`) live in the metadata database; which containers use a
//! volume is read from the container records in the transaction that creates or removes it, so
//! a volume in use cannot be removed. A crash leaves records and directories out of step at
//! worst in one direction each: [`Volumes::recover`] (at kapseld's start) removes directories
//! without a record and makes the `_data` of records without one. A volume is seeded
//! (Docker's copy-up) in a scratch directory renamed over the empty `_data`, so nobody sees a
//! half-copied volume.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::images::{code, Service};
use crate::metadata::{self, now_nanos, VolumeRecord};

/// The label Docker (23+) puts on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
/// The only driver.
pub const DRIVER: &str = "local";
const DATA: &str = "_data";
const SEED_PREFIX: &str = "_seed-";
const NAMESPACES_DIR: &str = "_ns";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error("invalid filter {0:?}: use dangling=true|false, name=TEXT or label=KEY[=VALUE]")]
    Filter(String),
    #[error("{0}")]
    Metadata(#[from] metadata::Error),
    #[error("volume {name}: {op} {path}: {source}")]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The status code a client sees.
    pub fn code(&self) -> i32 {
        match self {
            Error::InvalidName(_) | Error::Filter(_) => code::INVALID_ARGUMENT,
            Error::Metadata(metadata::Error::VolumeNotFound { .. }) => code::NOT_FOUND,
            Error::Metadata(metadata::Error::VolumeInUse { .. }) => code::FAILED_PRECONDITION,
            _ => code::INTERNAL,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err<'a>(
    name: &'a str,
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        name: name.to_string(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<()> {
    if crate::containers::is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// A new volume's record: `name` or, without one, an anonymous volume with 64 random hex
/// digits for a name.
pub fn new_record(name: Option<&str>, mut labels: BTreeMap<String, String>) -> VolumeRecord {
    let anonymous = name.is_none();
    if anonymous {
        labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
    }
    VolumeRecord {
        name: name.map_or_else(crate::containers::new_id, str::to_string),
        created_at: now_nanos(),
        labels,
        anonymous,
    }
}

/// `<root>/<name>` in the namespace `default`, `<root>/_ns/<ns>/<name>` in the others.
fn volume_dir(root: &Path, ns: &str, name: &str) -> PathBuf {
    if ns == metadata::DEFAULT_NAMESPACE {
        root.join(name)
    } else {
        root.join(NAMESPACES_DIR).join(ns).join(name)
    }
}

/// A volume and the containers using it.
#[derive(Debug, Clone)]
pub struct Volume {
    pub record: VolumeRecord,
    pub mountpoint: PathBuf,
    pub used_by: Vec<String>,
}

/// The volume store (one per kapseld).
pub struct Volumes {
    svc: Arc<Service>,
    root: PathBuf,
    /// Held from a record's removal until its directory is gone, and while records are made,
    /// so a volume made again under the same name never loses its directory to the removal
    /// of the old one.
    lock: Mutex<()>,
}

impl Volumes {
    /// `root`: `<kapseld root>/volumes`.
    pub fn new(svc: Arc<Service>, root: PathBuf) -> Volumes {
        Volumes {
            svc,
            root,
            lock: Mutex::new(()),
        }
    }

    /// Taken by whoever writes volume records (see the field).
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory of a volume (holds `_data`).
    pub fn dir(&self, ns: &str, name: &str) -> PathBuf {
        volume_dir(&self.root, ns, name)
    }

    /// What containers mount: `<dir>/_data`.
    pub fn mountpoint(&self, ns: &str, name: &str) -> PathBuf {
        self.dir(ns, name).join(DATA)
    }

    /// Makes `<dir>/_data` (root, 0755) if missing.
    pub fn make_dirs(&self, ns: &str, name: &str) -> Result<PathBuf> {
        let data = self.mountpoint(ns, name);
        std::fs::create_dir_all(&data).map_err(io_err(name, "create directory", &data))?;
        Ok(data)
    }

    /// `volume create`: the volume `name` (a new anonymous one without), or the existing one
    /// of that name.
    pub fn create(
        &self,
        ns: &str,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let ns = crate::images::namespace(ns);
        if let Some(n) = name {
            validate_name(n)?;
        }
        let rec = new_record(name, labels);
        let _g = self.lock();
        let (rec, _) = self.svc.db.create_volume(ns, &rec)?;
        self.make_dirs(ns, &rec.name)?;
        self.get(ns, &rec.name)
    }

    pub fn get(&self, ns: &str, name: &str) -> Result<Volume> {
        let ns = crate::images::namespace(ns);
        let rec = self.svc.db.get_volume(ns, name)?;
        let used_by = self
            .svc
            .db
            .list_containers(ns)?
            .into_iter()
            .filter(|c| c.volumes.iter().any(|m| m.name == name))
            .map(|c| c.id)
            .collect();
        Ok(Volume {
            mountpoint: self.mountpoint(ns, name),
            record: rec,
            used_by,
        })
    }

    /// `volume ls`, with Docker's filters `dangling=true|false`, `name=TEXT` (a substring)
    /// and `label=KEY[=VALUE]`.
    pub fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Volume>> {
        let ns = crate::images::namespace(ns);
        for f in filters {
            check_filter(f)?;
        }
        let mut out = Vec::new();
        for (rec, used_by) in self.svc.db.list_volumes(ns)? {
            let v = Volume {
                mountpoint: self.mountpoint(ns, &rec.name),
                record: rec,
                used_by,
            };
            let mut keep = true;
            for f in filters {
                keep &= matches(&v, f)?;
            }
            if keep {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// `volume rm`: refused while any container, running or not, uses it.
    pub fn remove(&self, ns: &str, name: &str) -> Result<()> {
        let ns = crate::images::namespace(ns);
        let _g = self.lock();
        self.svc.db.delete_volume(ns, name, |_| Ok(()))?;
        self.remove_dir(ns, name);
        Ok(())
    }

    /// Deletes the directory of a volume whose record is gone (best effort: what remains is
    /// removed by the next [`Volumes::recover`]).
    pub fn remove_dir(&self, ns: &str, name: &str) {
        let dir = self.dir(ns, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(volume = name, path = %dir.display(), "removing: {e}"),
        }
    }

    /// `volume prune`: the unused anonymous volumes, every unused one with `all`; returns the
    /// names removed and the bytes they held.
    pub fn prune(&self, ns: &str, all: bool) -> Result<(Vec<String>, u64)> {
        let ns = crate::images::namespace(ns);
        let mut names = Vec::new();
        let mut bytes = 0;
        for (rec, users) in self.svc.db.list_volumes(ns)? {
            if !users.is_empty() || !(all || rec.anonymous) {
                continue;
            }
            let size = disk_usage(&self.dir(ns, &rec.name));
            let _g = self.lock();
            // In use by a container made since the listing: kept.
            match self.svc.db.delete_volume(ns, &rec.name, |_| Ok(())) {
                Ok(_) => {}
                Err(
                    metadata::Error::VolumeInUse { .. } | metadata::Error::VolumeNotFound { .. },
                ) => continue,
                Err(e) => return Err(e.into()),
            }
            self.remove_dir(ns, &rec.name);
            bytes += size;
            names.push(rec.name);
        }
        Ok((names, bytes))
    }

    /// At kapseld's start, before it serves: removes volume directories without a record
    /// and seeding scratch directories a crash left, makes the `_data` of records without one.
    pub fn recover(&self) -> Result<()> {
        let mut known: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (ns, rec) in self.svc.db.all_volumes()? {
            known.insert(self.dir(&ns, &rec.name), rec.name.clone());
            self.make_dirs(&ns, &rec.name)?;
        }
        let mut dirs = Vec::new();
        for entry in read_dir(&self.root) {
            if entry.file_name() == NAMESPACES_DIR {
                for ns in read_dir(&entry.path()) {
                    dirs.extend(read_dir(&ns.path()).map(|e| e.path()));
                }
            } else {
                dirs.push(entry.path());
            }
        }
        for dir in dirs {
            if !known.contains_key(&dir) {
                tracing::info!(path = %dir.display(), "removing a volume directory without a record");
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), "removing: {e}");
                }
                continue;
            }
            for e in read_dir(&dir) {
                if e.file_name().to_string_lossy().starts_with(SEED_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

fn read_dir(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(dir).into_iter().flatten().flatten()
}

fn check_filter(filter: &str) -> Result<()> {
    match filter.split_once('=') {
        Some(("dangling", "true" | "1" | "false" | "0")) | Some(("name" | "label", _)) => Ok(()),
        _ => Err(Error::Filter(filter.to_string())),
    }
}

fn matches(v: &Volume, filter: &str) -> Result<bool> {
    let bad = || Error::Filter(filter.to_string());
    let (key, value) = filter.split_once('=').ok_or_else(bad)?;
    Ok(match key {
        "dangling" => match value {
            "true" | "1" => v.used_by.is_empty(),
            "false" | "0" => !v.used_by.is_empty(),
            _ => return Err(bad()),
        },
        "name" => v.record.name.contains(value),
        "label" => match value.split_once('=') {
            Some((k, want)) => v.record.labels.get(k).is_some_and(|x| x == want),
            None => v.record.labels.contains_key(value),
        },
        _ => return Err(bad()),
    })
}

/// Bytes the files under `dir` occupy on disk (as `du`).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut n = meta.blocks() * 512;
    if meta.is_dir() {
        for e in read_dir(dir) {
            n += disk_usage(&e.path());
        }
    }
    n
}

/// Docker's copy-up: when the volume at `data` is empty, fills it with what the image has at
/// `dest` in `rootfs` (modes and owners kept, the volume's root included; device nodes, FIFOs
/// and sockets skipped). The copy is made beside `data` and renamed over it, so a crash or a
/// second container seeding at the same time never leaves a half-filled volume. A `dest`
/// missing from the image leaves the volume as it is; one that is not a directory there is an
/// error.
pub fn seed(rootfs: &Path, dest: &str, data: &Path) -> io::Result<()> {
    if std::fs::read_dir(data)?.next().is_some() {
        return Ok(());
    }
    let in_image = crate::containers::user::resolve_in_rootfs(rootfs, Path::new(dest), false)?;
    match std::fs::symlink_metadata(&in_image) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("volume path {dest}: not a directory in the image"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let parent = data.parent().unwrap_or(data);
    let scratch = parent.join(format!("{SEED_PREFIX}{}", crate::unpack::random_hex()));
    let copied = copy_tree(&in_image, &scratch).and_then(|()| std::fs::rename(&scratch, data));
    match copied {
        Ok(()) => Ok(()),
        // Filled meanwhile by another container's seeding: theirs stays.
        Err(e)
            if e.raw_os_error() == Some(libc::ENOTEMPTY)
                || e.raw_os_error() == Some(libc::EEXIST) =>
        {
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            Err(e)
        }
    }
}

/// Copies `from` to `to` (which must not exist): directories, regular files and symlinks with
/// their owners and modes.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if kind.is_file() {
        std::fs::copy(from, to)?;
    } else {
        return Ok(());
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    if !kind.is_symlink() {
        // After the chown, which clears set-id bits.
        std::fs::set_permissions(to, meta.permissions())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
