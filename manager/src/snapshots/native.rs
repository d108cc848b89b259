//! The `native` snapshotter: every snapshot is a full copy of its parent's tree (owners, modes,
//! xattrs, hard links, symlinks, device nodes and times preserved), mounted as a bind mount.
//! For filesystems overlayfs cannot use as upper layer; costs a copy per layer.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::meta::{Driver, Record, Store};
use super::{Error, Kind, Labels, Mount, Result};
use crate::unpack::{copy_entry, sys};

pub struct NativeSnapshotter {
    store: Store,
}

impl std::fmt::Debug for NativeSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeSnapshotter")
            .field("root", &self.store.root())
            .finish()
    }
}

impl NativeSnapshotter {
    /// Opens (creating) the snapshotter at `root`, removing leftovers of interrupted changes.
    pub fn open(root: &Path) -> Result<NativeSnapshotter> {
        Ok(NativeSnapshotter {
            store: Store::open(root)?,
        })
    }

    fn mounts_of(&self, rec: &Record) -> Vec<Mount> {
        let ro = rec.kind != Kind::Active;
        vec![Mount {
            kind: "bind".into(),
            source: self.fs(rec).to_string_lossy().into_owned(),
            target: None,
            options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
        }]
    }

    fn create_snapshot(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let p = self.store.begin_create(key, parent, kind, labels)?;
        let fs_dir = p.dir.join("fs");
        let populate = || -> Result<()> {
            match p.parents.first() {
                None => {
                    fs::create_dir(&fs_dir).map_err(Error::io("create", &fs_dir))?;
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
                        .map_err(Error::io("chmod", &fs_dir))
                }
                Some(parent) => {
                    let src = self.fs(parent);
                    copy_tree(&src, &fs_dir).map_err(Error::io("copy the parent into", &fs_dir))
                }
            }
        };
        if let Err(e) = populate() {
            self.store.abort_create(p);
            return Err(e);
        }
        let rec = self.store.finish_create(p)?;
        Ok(self.mounts_of(&rec))
    }
}

impl Driver for NativeSnapshotter {
    const NAME: &'static str = "native";

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
        Ok(self.mounts_of(&self.store.get(key)?))
    }
}

/// Copies the tree `src` to the new directory `dst` (which must not exist), preserving what an
/// image layer can hold. Hard links inside the tree stay hard links.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let parent = dst
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let name = CString::new(
        dst.file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .as_bytes(),
    )
    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let sparent = src
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let sname = CString::new(
        src.file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .as_bytes(),
    )
    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let sp = sys::open_dir(sparent)?;
    let dp = sys::open_dir(parent)?;
    let st = sys::lstat_at(sp.as_fd(), &sname)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "source is missing"))?;
    sys::mkdir_at(dp.as_fd(), &name, 0o700)?;
    let mut c = Copier {
        links: HashMap::new(),
        buf: vec![0; 256 * 1024],
        droot: sys::open_dir(dst)?,
    };
    c.dir(sp.as_fd(), &sname, dp.as_fd(), &name, Path::new(""))?;
    // The root's own metadata last: its contents changed its times.
    set_dir_meta(dp.as_fd(), &name, &st, sp.as_fd(), &sname)
}

struct Copier {
    /// (dev, ino) of a multiply linked source inode → its first copy, relative to the root.
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
    droot: std::os::fd::OwnedFd,
}

impl Copier {
    /// Copies the contents of the directory `sname` in `sdir` into `dname` in `ddir`.
    fn dir(
        &mut self,
        sdir: BorrowedFd<'_>,
        sname: &std::ffi::CStr,
        ddir: BorrowedFd<'_>,
        dname: &std::ffi::CStr,
        rel: &Path,
    ) -> io::Result<()> {
        let s: std::os::fd::OwnedFd = sys::open_read_at(sdir, sname, true)?.into();
        let d: std::os::fd::OwnedFd = sys::open_read_at(ddir, dname, true)?.into();
        for child in sys::list_dir(s.as_fd())? {
            let c = CString::new(child.as_bytes()).expect("a file name has no NUL");
            let Some(st) = sys::lstat_at(s.as_fd(), &c)? else {
                continue;
            };
            let crel = rel.join(&child);
            if sys::is_dir(&st) {
                sys::mkdir_at(d.as_fd(), &c, 0o700)?;
                self.dir(s.as_fd(), &c, d.as_fd(), &c, &crel)?;
                set_dir_meta(d.as_fd(), &c, &st, s.as_fd(), &c)?;
                continue;
            }
            if st.st_nlink > 1 {
                let key = (st.st_dev, st.st_ino);
                if let Some(first) = self.links.get(&key) {
                    let (fparent, fname) = (
                        first.parent().unwrap_or(Path::new("")),
                        first.file_name().expect("a file path has a name"),
                    );
                    let fp = sys::resolve_dir(self.droot.as_fd(), fparent)?;
                    let fname = CString::new(fname.as_bytes()).expect("no NUL");
                    sys::link_at(fp.as_fd(), &fname, d.as_fd(), &c)?;
                    continue;
                }
                self.links.insert(key, crel);
            }
            copy_entry(s.as_fd(), &c, &st, d.as_fd(), &c, &mut self.buf)?;
        }
        Ok(())
    }
}

fn set_dir_meta(
    ddir: BorrowedFd<'_>,
    dname: &std::ffi::CStr,
    st: &libc::stat,
    sdir: BorrowedFd<'_>,
    sname: &std::ffi::CStr,
) -> io::Result<()> {
    sys::chown_at(ddir, dname, st.st_uid, st.st_gid)?;
    sys::chmod_at(ddir, dname, st.st_mode & 0o7777)?;
    for (k, v) in sys::get_xattrs_at(sdir, sname)? {
        sys::set_xattr_at(ddir, dname, &k, &v)?;
    }
    sys::utimes_at(
        ddir,
        dname,
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
    )
}
