//! The `overlayfs` snapshotter (the default): each snapshot's `fs/` is one overlay layer.
//!
//! Mounts, as containerd's overlay snapshotter gives them:
//! - active without parent: `bind` of its `fs/`, read-write;
//! - active with parents: `overlay` with `workdir=`, `upperdir=` (its own `fs/`) and
//!   `lowerdir=` (the parents' `fs/`, nearest first);
//! - view (and committed): its single layer as a read-only `bind`, several as a read-only
//!   `overlay` of `lowerdir=` only.
//!
//! Many layers make `lowerdir=` longer than a page; [`super::mount_all`] handles that.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::meta::{Driver, Record, Store};
use super::{Error, Kind, Labels, Mount, Result};

pub struct OverlaySnapshotter {
    store: Store,
}

impl std::fmt::Debug for OverlaySnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlaySnapshotter")
            .field("root", &self.store.root())
            .finish()
    }
}

impl OverlaySnapshotter {
    /// Opens (creating) the snapshotter at `root`, removing leftovers of interrupted changes.
    pub fn open(root: &Path) -> Result<OverlaySnapshotter> {
        Ok(OverlaySnapshotter {
            store: Store::open(root)?,
        })
    }

    fn mounts_of(&self, chain: &[Record]) -> Vec<Mount> {
        let rec = &chain[0];
        let parents = &chain[1..];
        let path = |r: &Record| self.fs(r).to_string_lossy().into_owned();
        let bind = |r: &Record, ro: bool| Mount {
            kind: "bind".into(),
            source: path(r),
            target: None,
            options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
        };
        let overlay = |options: Vec<String>| Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options,
        };
        let lowerdir = |ls: &[Record]| {
            format!(
                "lowerdir={}",
                ls.iter().map(path).collect::<Vec<_>>().join(":")
            )
        };
        match rec.kind {
            Kind::Active if parents.is_empty() => vec![bind(rec, false)],
            Kind::Active => vec![overlay(vec![
                format!(
                    "workdir={}",
                    self.store.dir(rec.id).join("work").to_string_lossy()
                ),
                format!("upperdir={}", path(rec)),
                lowerdir(parents),
            ])],
            Kind::View => match parents {
                [] => vec![bind(rec, true)],
                [only] => vec![bind(only, true)],
                _ => vec![overlay(vec![lowerdir(parents)])],
            },
            Kind::Committed => match chain {
                [only] => vec![bind(only, true)],
                _ => vec![overlay(vec![lowerdir(chain)])],
            },
        }
    }

    fn create_snapshot(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let p = self.store.begin_create(key, parent, kind, labels)?;
        let populate = || -> Result<()> {
            let fs_dir = p.dir.join("fs");
            fs::create_dir(&fs_dir).map_err(Error::io("create", &fs_dir))?;
            // The upper's root directory is the merged root's: keep the parent's owner and mode.
            let mode = match p.parents.first() {
                Some(parent) => {
                    let pfs = self.fs(parent);
                    let md = fs::metadata(&pfs).map_err(Error::io("stat", &pfs))?;
                    std::os::unix::fs::chown(&fs_dir, Some(md.uid()), Some(md.gid()))
                        .map_err(Error::io("chown", &fs_dir))?;
                    md.mode() & 0o7777
                }
                None => 0o755,
            };
            fs::set_permissions(&fs_dir, fs::Permissions::from_mode(mode))
                .map_err(Error::io("chmod", &fs_dir))?;
            if kind == Kind::Active {
                let work = p.dir.join("work");
                fs::create_dir(&work).map_err(Error::io("create", &work))?;
            }
            Ok(())
        };
        if let Err(e) = populate() {
            self.store.abort_create(p);
            return Err(e);
        }
        let rec = self.store.finish_create(p)?;
        let chain = self.store.chain(&rec.name)?;
        Ok(self.mounts_of(&chain))
    }
}

impl Driver for OverlaySnapshotter {
    const NAME: &'static str = "overlayfs";

    fn store(&self) -> &Store {
        &self.store
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create_snapshot(kind, key, parent, labels)
    }

    fn mounts_of_key(&self, key: &str) -> Result<Vec<Mount>> {
        Ok(self.mounts_of(&self.store.chain(key)?))
    }
}
