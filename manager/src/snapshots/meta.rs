//! The crash-safe metadata and directory store both snapshotters share (layout: see `mod.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage};

const META: &str = "meta.json";

/// One snapshot's `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: u64,
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    /// Nanoseconds since the epoch.
    pub created: u128,
    #[serde(default)]
    pub labels: Labels,
    /// Measured at commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl Record {
    pub fn info(&self) -> Info {
        let nanos = u64::try_from(self.created).unwrap_or(u64::MAX);
        Info {
            name: self.name.clone(),
            parent: self.parent.clone(),
            kind: self.kind,
            created: UNIX_EPOCH + Duration::from_nanos(nanos),
            labels: self.labels.clone(),
        }
    }
}

struct State {
    by_name: BTreeMap<String, Record>,
    /// Keys whose snapshot is being created (reserved, not yet visible).
    pending: BTreeMap<String, Option<String>>,
    next_id: u64,
}

pub(crate) struct Store {
    root: PathBuf,
    snapshots: PathBuf,
    state: Mutex<State>,
    _lock: File,
}

/// A snapshot being created: its directory is `new-<id>` until [`Store::finish_create`].
pub(crate) struct Pending {
    pub record: Record,
    pub dir: PathBuf,
    /// The parent chain, nearest first (records of committed snapshots).
    pub parents: Vec<Record>,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store> {
        let snapshots = root.join("snapshots");
        fs::create_dir_all(&snapshots).map_err(Error::io("create", &snapshots))?;
        let lock_path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        // SAFETY: flock on an fd we own; no memory is passed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked {
                    root: root.to_path_buf(),
                });
            }
            return Err(Error::io("lock", &lock_path)(err));
        }
        let mut by_name = BTreeMap::new();
        let mut next_id = 1;
        let entries = fs::read_dir(&snapshots).map_err(Error::io("read", &snapshots))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("read", &snapshots))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if let Some(id) = name
                .strip_prefix("new-")
                .or_else(|| name.strip_prefix("trash-"))
            {
                tracing::info!(path = %path.display(), "removing an interrupted snapshot change");
                if let Ok(id) = id.parse::<u64>() {
                    next_id = next_id.max(id + 1);
                }
                remove_tree(&path)?;
                continue;
            }
            let Ok(id) = name.parse::<u64>() else {
                tracing::warn!(path = %path.display(), "ignoring a foreign entry in the snapshot directory");
                continue;
            };
            next_id = next_id.max(id + 1);
            let meta = path.join(META);
            let data = fs::read(&meta).map_err(Error::io("read", &meta))?;
            let record: Record =
                serde_json::from_slice(&data).map_err(|source| Error::Corrupt {
                    path: meta.clone(),
                    source,
                })?;
            by_name.insert(record.name.clone(), record);
        }
        sync_dir(&snapshots)?;
        Ok(Store {
            root: root.to_path_buf(),
            snapshots,
            state: Mutex::new(State {
                by_name,
                pending: BTreeMap::new(),
                next_id,
            }),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the map consistent (every change is one insert
        // or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory of a live snapshot.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    pub fn get(&self, key: &str) -> Result<Record> {
        self.lock()
            .by_name
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// The snapshot and its ancestors, nearest first.
    pub fn chain(&self, key: &str) -> Result<Vec<Record>> {
        let st = self.lock();
        chain_of(&st, key)
    }

    pub fn walk(&self) -> Vec<Record> {
        let st = self.lock();
        // Parents before children: order by depth, then name.
        let mut all: Vec<(usize, Record)> = st
            .by_name
            .values()
            .map(|r| {
                let depth = chain_of(&st, &r.name).map(|c| c.len()).unwrap_or(0);
                (depth, r.clone())
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        all.into_iter().map(|(_, r)| r).collect()
    }

    /// Reserves `key`, checks `parent`, and creates the directory `new-<id>`.
    pub fn begin_create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: Labels,
    ) -> Result<Pending> {
        check_key(key)?;
        let mut st = self.lock();
        if st.by_name.contains_key(key) || st.pending.contains_key(key) {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        let parents = match parent {
            None => Vec::new(),
            Some(p) => {
                let rec = st
                    .by_name
                    .get(p)
                    .ok_or_else(|| Error::NotFound(p.to_string()))?;
                if rec.kind != Kind::Committed {
                    return Err(Error::ParentNotCommitted {
                        parent: p.to_string(),
                        kind: rec.kind,
                    });
                }
                chain_of(&st, p)?
            }
        };
        let id = st.next_id;
        st.next_id += 1;
        let dir = self.snapshots.join(format!("new-{id}"));
        fs::create_dir(&dir).map_err(Error::io("create", &dir))?;
        st.pending
            .insert(key.to_string(), parent.map(str::to_string));
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(Pending {
            record: Record {
                id,
                name: key.to_string(),
                parent: parent.map(str::to_string),
                kind,
                created,
                labels,
                usage: None,
            },
            dir,
            parents,
        })
    }

    /// Writes `meta.json` into the new directory and renames it into place.
    pub fn finish_create(&self, p: Pending) -> Result<Record> {
        let res = (|| {
            write_meta(&p.dir, &p.record)?;
            let live = self.dir(p.record.id);
            fs::rename(&p.dir, &live).map_err(Error::io("rename", &p.dir))?;
            sync_dir(&self.snapshots)
        })();
        let mut st = self.lock();
        st.pending.remove(&p.record.name);
        match res {
            Ok(()) => {
                st.by_name.insert(p.record.name.clone(), p.record.clone());
                Ok(p.record)
            }
            Err(e) => {
                drop(st);
                let _ = remove_tree(&p.dir);
                Err(e)
            }
        }
    }

    /// Drops a reservation whose population failed.
    pub fn abort_create(&self, p: Pending) {
        self.lock().pending.remove(&p.record.name);
        if let Err(e) = remove_tree(&p.dir) {
            tracing::warn!(error = %e, "cannot remove an aborted snapshot directory");
        }
    }

    /// Renames the active snapshot `key` to the committed `name`, storing `usage`.
    pub fn commit(&self, name: &str, key: &str, labels: Labels, usage: Usage) -> Result<()> {
        check_key(name)?;
        let mut st = self.lock();
        let rec = st
            .by_name
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if rec.kind != Kind::Active {
            return Err(Error::NotActive {
                key: key.to_string(),
                kind: rec.kind,
            });
        }
        if st.by_name.contains_key(name) || st.pending.contains_key(name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let mut new = rec.clone();
        new.name = name.to_string();
        new.kind = Kind::Committed;
        new.labels = labels;
        new.usage = Some(usage);
        write_meta(&self.dir(new.id), &new)?;
        st.by_name.remove(key);
        st.by_name.insert(name.to_string(), new);
        Ok(())
    }

    pub fn update_labels(&self, key: &str, labels: Labels) -> Result<Record> {
        let mut st = self.lock();
        let rec = st
            .by_name
            .get_mut(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        let mut new = rec.clone();
        new.labels = labels;
        write_meta(&self.dir(new.id), &new)?;
        *rec = new.clone();
        Ok(new)
    }

    /// Removes a snapshot without children: rename to `trash-<id>`, then delete.
    pub fn remove(&self, key: &str) -> Result<()> {
        let trash = {
            let mut st = self.lock();
            let rec = st
                .by_name
                .get(key)
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            let children: BTreeSet<String> = st
                .by_name
                .values()
                .filter(|r| r.parent.as_deref() == Some(key))
                .map(|r| r.name.clone())
                .chain(
                    st.pending
                        .iter()
                        .filter(|(_, p)| p.as_deref() == Some(key))
                        .map(|(k, _)| k.clone()),
                )
                .collect();
            if !children.is_empty() {
                return Err(Error::HasChildren {
                    key: key.to_string(),
                    children: children.into_iter().collect(),
                });
            }
            let live = self.dir(rec.id);
            let trash = self.snapshots.join(format!("trash-{}", rec.id));
            fs::rename(&live, &trash).map_err(Error::io("rename", &live))?;
            sync_dir(&self.snapshots)?;
            st.by_name.remove(key);
            trash
        };
        remove_tree(&trash)
    }
}

fn chain_of(st: &State, key: &str) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut next = Some(key.to_string());
    while let Some(k) = next {
        let rec = st
            .by_name
            .get(&k)
            .ok_or_else(|| Error::NotFound(k.clone()))?;
        next = rec.parent.clone();
        out.push(rec.clone());
        if out.len() > 100_000 {
            // Only a hand-edited meta.json can make a loop.
            return Err(Error::NotFound(format!("{key} (parent loop)")));
        }
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('\0') {
        return Err(Error::InvalidKey(key.to_string()));
    }
    Ok(())
}

/// Writes `dir/meta.json` atomically: temporary file, fsync, rename, fsync of the directory.
fn write_meta(dir: &Path, rec: &Record) -> Result<()> {
    let tmp = dir.join(".meta.json.tmp");
    let data = serde_json::to_vec_pretty(rec).expect("a record always serialises");
    let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    f.write_all(&data).map_err(Error::io("write", &tmp))?;
    f.sync_all().map_err(Error::io("fsync", &tmp))?;
    drop(f);
    let meta = dir.join(META);
    fs::rename(&tmp, &meta).map_err(Error::io("rename", &tmp))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync", dir))
}

/// syncfs(2) of the filesystem holding `dir`: a committed snapshot's files are on disk before
/// its metadata says it is committed (a crash must not leave a committed layer with empty files).
pub(crate) fn sync_fs(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(Error::io("open", dir))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io("syncfs", dir)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Deletes a tree we own (no symlink is followed: `remove_dir_all` does not follow them).
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// Disk usage of a tree: allocated bytes and inodes, hard-linked inodes counted once,
/// symlinks not followed.
pub(crate) fn disk_usage(root: &Path) -> Result<Usage> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).map_err(Error::io("stat", &p))?;
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.size += md.blocks() * 512;
        if md.is_dir() {
            for e in fs::read_dir(&p).map_err(Error::io("read", &p))? {
                stack.push(e.map_err(Error::io("read", &p))?.path());
            }
        }
    }
    Ok(usage)
}

/// What differs between snapshot drivers: their name, how a new snapshot's tree is made and
/// which mounts show a snapshot. The rest of [`Snapshotter`] (metadata, usage, commit, removal)
/// is the same for all of them and lives in the blanket impl below.
pub(super) trait Driver: Send + Sync {
    const NAME: &'static str;
    fn store(&self) -> &Store;
    /// Creates `key` of `kind` on `parent` and returns its mounts.
    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>>;
    /// The mounts that show snapshot `key`.
    fn mounts_of_key(&self, key: &str) -> Result<Vec<Mount>>;

    /// The directory holding a snapshot's tree.
    fn fs(&self, rec: &Record) -> PathBuf {
        self.store().dir(rec.id).join("fs")
    }
}

impl<D: Driver> Snapshotter for D {
    fn driver(&self) -> &'static str {
        D::NAME
    }

    fn root(&self) -> &Path {
        self.store().root()
    }

    fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.store().get(key)?.info())
    }

    fn update_labels(&self, key: &str, labels: Labels) -> Result<Info> {
        Ok(self.store().update_labels(key, labels)?.info())
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.store().get(key)?;
        match rec.usage {
            Some(u) if rec.kind == Kind::Committed => Ok(u),
            _ => disk_usage(&self.fs(&rec)),
        }
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.mounts_of_key(key)
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let rec = self.store().get(key)?;
        let usage = if rec.kind == Kind::Active {
            // The tree reaches the disk before the metadata says it is committed.
            sync_fs(&self.fs(&rec))?;
            disk_usage(&self.fs(&rec))?
        } else {
            Usage::default()
        };
        self.store().commit(name, key, labels, usage)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.store().remove(key)
    }

    fn walk(&self) -> Result<Vec<Info>> {
        Ok(self.store().walk().iter().map(Record::info).collect())
    }
}
