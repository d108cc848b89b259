//! Applying one OCI layer (an uncompressed tar stream) onto a directory.
//!
//! Every entry path is cleaned lexically (a leading `/` is dropped, `..` that would climb above
//! the root is refused); its parent directory is opened with `RESOLVE_IN_ROOT` from the root's
//! descriptor, so symlinks in the layer (or below it) resolve inside the root; the last component
//! is handled with `*at` calls that never follow it. Whatever a hostile layer holds, writes stay
//! inside the root.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::sys;
use super::Error;
use crate::oci::Digest;

/// How whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Delete what they name (the destination shows the merged tree: native snapshots, or an
    /// overlay mounted for the unpack).
    #[default]
    Delete,
    /// Write overlayfs's own form into an upper directory: a whiteout is a 0:0 character
    /// device, an opaque directory has `trusted.overlay.opaque=y`.
    Overlay,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// With [`WhiteoutMode::Overlay`]: the lower layers of the upper directory being written,
    /// nearest first. A hard link whose target exists only in a lower layer copies the target
    /// up first; a directory created implicitly takes its owner and mode from the lower one.
    pub parents: Vec<PathBuf>,
    /// Ignore `EPERM`/`EINVAL` from chown (an unprivileged unpack).
    pub ignore_chown_errors: bool,
}

/// What [`apply_layer`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream (the layer's diff_id).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
    /// Tar entries applied (whiteouts included).
    pub entries: u64,
}

const OPAQUE: &[u8] = b".wh..wh..opq";
const WH_PREFIX: &[u8] = b".wh.";
const BUF_SIZE: usize = 256 * 1024;

/// Applies the tar stream `tar_stream` onto `dest` (an existing directory) and returns the
/// sha256 and size of the stream (read to its end, trailing padding included).
pub fn apply_layer(
    dest: &Path,
    tar_stream: impl Read,
    opts: &ApplyOptions,
) -> Result<ApplyStats, Error> {
    let root = sys::open_dir(dest).map_err(|source| Error::Dest {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(BUF_SIZE, tar_stream),
        hasher: Sha256::new(),
        count: 0,
    };
    let mut ap = Applier {
        root,
        opts,
        created: HashSet::new(),
        dir_times: Vec::new(),
        restore_times: Vec::new(),
        touched: HashSet::new(),
        cache: None,
        lowers: None,
        buf: vec![0; BUF_SIZE],
    };
    let mut entries = 0;
    {
        let mut archive = tar::Archive::new(&mut reader);
        for entry in archive.entries().map_err(Error::Tar)? {
            let mut entry = entry.map_err(Error::Tar)?;
            ap.entry(&mut entry)?;
            entries += 1;
        }
    }
    // The archive stops at its end-of-archive block; the diff_id covers every byte after it.
    io::copy(&mut reader, &mut io::sink()).map_err(Error::Tar)?;
    ap.finish()?;
    Ok(ApplyStats {
        diff_id: Digest::from_hasher(reader.hasher),
        size: reader.count,
        entries,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Seconds and nanoseconds.
type Time = (i64, i64);

struct Applier<'a> {
    root: OwnedFd,
    opts: &'a ApplyOptions,
    /// Delete mode: paths this layer created (an opaque marker keeps them).
    created: HashSet<PathBuf>,
    /// Directory times, set at the end (adding entries changes a directory's mtime).
    dir_times: Vec<(PathBuf, Time, Time)>,
    /// Delete mode: times of existing directories this layer changes without declaring them,
    /// restored at the end (as overlayfs shows them: an upper directory created implicitly
    /// takes the lower one's times), so both modes give the same tree.
    restore_times: Vec<(PathBuf, Time, Time)>,
    touched: HashSet<PathBuf>,
    /// The last parent directory opened.
    cache: Option<(PathBuf, Rc<OwnedFd>)>,
    /// Overlay mode: the parents' roots, opened on first use.
    lowers: Option<Vec<OwnedFd>>,
    buf: Vec<u8>,
}

/// A tar entry's metadata.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Time,
    mtime: Time,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Cleans a path from a layer: `None` when `..` climbs above the root.
pub(crate) fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn parse_time(v: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let sec: i64 = sec.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        nsec += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    if sec < 0 && nsec > 0 {
        return Some((sec - 1, 1_000_000_000 - nsec));
    }
    Some((sec, nsec))
}

fn cname(name: &OsStr, path: &Path) -> Result<CString, Error> {
    CString::new(name.as_bytes()).map_err(|_| Error::Hostile {
        path: path.display().to_string(),
        reason: "the name contains a NUL byte",
    })
}

fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or(OsStr::new(".")),
    )
}

/// Removing a directory or a symlink can change what a cached parent path resolves to.
fn may_be_path_component(st: &libc::stat) -> bool {
    sys::is_dir(st) || st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

fn is_whiteout_dev(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// xattrs that steer overlayfs itself are never taken from a layer (they could redirect
/// lookups into other layers); opacity comes from `.wh..wh..opq` only.
fn xattr_allowed(key: &[u8]) -> bool {
    !(key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay."))
}

/// Removes the xattrs of the existing directory `name` that a layer could have set and `keep`
/// does not name. Overlay's own (opacity) and the host's SELinux label stay.
fn drop_stale_xattrs(
    dir: BorrowedFd<'_>,
    name: &CStr,
    keep: &[(CString, Vec<u8>)],
) -> io::Result<()> {
    for (k, _) in sys::get_xattrs_at(dir, name)? {
        let kb = k.to_bytes();
        if xattr_allowed(kb) && kb != b"security.selinux" && !keep.iter().any(|(n, _)| *n == k) {
            sys::remove_xattr_at(dir, name, &k)?;
        }
    }
    Ok(())
}

impl Applier<'_> {
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let raw = e.path().map_err(Error::Tar)?.into_owned();
        let shown = raw.display().to_string();
        let hostile = |reason| Error::Hostile {
            path: shown.clone(),
            reason,
        };
        let io_err = |op: &'static str| {
            let path = shown.clone();
            move |source| Error::Entry { path, op, source }
        };
        let rel = clean(&raw).ok_or_else(|| hostile("the path climbs out of the root with .."))?;
        let etype = e.header().entry_type();
        if matches!(
            etype,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
        ) {
            return Ok(());
        }

        let mut xattrs = Vec::new();
        let mut pax_mtime = None;
        let mut pax_atime = None;
        if let Some(exts) = e.pax_extensions().map_err(Error::Tar)? {
            for ext in exts {
                let ext = ext.map_err(Error::Tar)?;
                let key = ext.key_bytes();
                if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                    if !xattr_allowed(x) {
                        tracing::debug!(path = %shown, "dropping an overlay xattr from a layer");
                        continue;
                    }
                    let k = CString::new(x).map_err(|_| hostile("an xattr name has a NUL"))?;
                    xattrs.push((k, ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    pax_mtime = parse_time(ext.value_bytes());
                } else if key == b"atime" {
                    pax_atime = parse_time(ext.value_bytes());
                }
            }
        }
        let h = e.header();
        let mtime = match pax_mtime {
            Some(t) => t,
            None => (h.mtime().map_err(Error::Tar)? as i64, 0),
        };
        let meta = Meta {
            mode: h.mode().map_err(Error::Tar)? & 0o7777,
            uid: u32::try_from(h.uid().map_err(Error::Tar)?)
                .map_err(|_| hostile("the uid is out of range"))?,
            gid: u32::try_from(h.gid().map_err(Error::Tar)?)
                .map_err(|_| hostile("the gid is out of range"))?,
            atime: pax_atime.unwrap_or(mtime),
            mtime,
            xattrs,
        };

        if rel.as_os_str().is_empty() {
            // The root itself ("./"): only its metadata can change.
            if etype != EntryType::Directory {
                return Err(hostile("only a directory can replace the root"));
            }
            let root = Rc::new(self.dup_root().map_err(io_err("open root"))?);
            self.set_meta(&root, c".", &meta, true, &rel)
                .map_err(io_err("set metadata"))?;
            return Ok(());
        }

        let (parent_rel, name) = split(&rel);
        let name_b = name.as_bytes();
        if name_b == OPAQUE {
            return self.opaque(parent_rel).map_err(io_err("opaque directory"));
        }
        if let Some(target) = name_b.strip_prefix(WH_PREFIX) {
            if target.starts_with(WH_PREFIX) {
                // Other `.wh..wh.` metadata (aufs): nothing to apply.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
                return Err(hostile("a whiteout must name an entry of its directory"));
            }
            let target = cname(OsStr::from_bytes(target), &raw)?;
            return self
                .whiteout(parent_rel, &target)
                .map_err(io_err("whiteout"));
        }

        let cn = cname(name, &raw)?;
        let parent = self
            .dir(parent_rel, true)
            .map_err(io_err("open parent directory"))?;
        let pfd = parent.as_fd();
        let is_dir_entry = etype == EntryType::Directory;
        // Overlay mode: a directory replacing this layer's own whiteout of the same name must
        // hide the lower directory (what deleting and recreating it means).
        let mut make_opaque = false;
        if let Some(st) = sys::lstat_at(pfd, &cn).map_err(io_err("stat"))? {
            make_opaque = is_dir_entry
                && self.opts.whiteouts == WhiteoutMode::Overlay
                && is_whiteout_dev(&st);
            if !(is_dir_entry && sys::is_dir(&st)) {
                sys::remove_all_at(pfd, &cn).map_err(io_err("replace"))?;
                if may_be_path_component(&st) {
                    self.cache = None;
                }
            }
        }

        match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = sys::create_at(pfd, &cn, 0o600).map_err(io_err("create"))?;
                loop {
                    let n = e.read(&mut self.buf).map_err(Error::Tar)?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&self.buf[..n]).map_err(io_err("write"))?;
                }
            }
            EntryType::Directory => {
                match sys::mkdir_at(pfd, &cn, 0o700) {
                    Ok(()) => {}
                    Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
                        // The entry is the directory's whole metadata (as overlayfs shows an
                        // upper directory's own xattrs only): what it does not carry goes.
                        drop_stale_xattrs(pfd, &cn, &meta.xattrs)
                            .map_err(io_err("remove xattrs"))?;
                    }
                    Err(err) => return Err(io_err("mkdir")(err)),
                }
                if make_opaque {
                    sys::set_xattr_at(pfd, &cn, c"trusted.overlay.opaque", b"y")
                        .map_err(io_err("opaque directory"))?;
                }
            }
            EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| hostile("a symlink without a target"))?;
                let target = CString::new(target.into_owned())
                    .map_err(|_| hostile("the symlink target has a NUL"))?;
                sys::symlink_at(&target, pfd, &cn).map_err(io_err("symlink"))?;
            }
            EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(Error::Tar)?
                    .ok_or_else(|| hostile("a hard link without a target"))?
                    .into_owned();
                let trel = clean(&target)
                    .ok_or_else(|| hostile("the hard link target climbs out of the root"))?;
                if trel.as_os_str().is_empty() {
                    return Err(hostile("a hard link to the root"));
                }
                drop(parent);
                self.hard_link(&trel, &rel, &cn)
                    .map_err(io_err("hard link"))?;
                self.note_created(&rel);
                // A hard link shares its target's inode and metadata.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match etype {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = h.device_major().map_err(Error::Tar)?.unwrap_or(0);
                let minor = h.device_minor().map_err(Error::Tar)?.unwrap_or(0);
                sys::mknod_at(pfd, &cn, kind | 0o600, sys::makedev(major, minor))
                    .map_err(io_err("mknod"))?;
            }
            other => {
                tracing::debug!(path = %shown, kind = ?other, "skipping a tar entry of an unsupported type");
                return Ok(());
            }
        }
        self.set_meta(&parent, &cn, &meta, etype != EntryType::Symlink, &rel)
            .map_err(io_err("set metadata"))?;
        self.note_created(&rel);
        Ok(())
    }

    fn note_created(&mut self, rel: &Path) {
        if self.opts.whiteouts == WhiteoutMode::Delete {
            self.created.insert(rel.to_path_buf());
        }
    }

    fn dup_root(&self) -> io::Result<OwnedFd> {
        self.root.try_clone()
    }

    /// Owner, then mode (chown clears setuid), then xattrs (chown clears security.capability),
    /// then times (directories: at the end).
    fn set_meta(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        m: &Meta,
        chmod: bool,
        rel: &Path,
    ) -> io::Result<()> {
        let fd = dir.as_fd();
        if let Err(e) = sys::chown_at(fd, name, m.uid, m.gid) {
            let tolerated = matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL));
            if !(self.opts.ignore_chown_errors && tolerated) {
                return Err(e);
            }
        }
        if chmod {
            sys::chmod_at(fd, name, m.mode)?;
        }
        for (k, v) in &m.xattrs {
            if let Err(e) = sys::set_xattr_at(fd, name, k, v) {
                if e.raw_os_error() == Some(libc::ENOTSUP) {
                    tracing::warn!(path = %rel.display(), xattr = ?k, "the filesystem does not support this xattr; skipped");
                    continue;
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("xattr {}: {e}", k.to_string_lossy()),
                ));
            }
        }
        let st = sys::lstat_at(fd, name)?;
        if st.as_ref().is_some_and(sys::is_dir) {
            self.dir_times.push((rel.to_path_buf(), m.atime, m.mtime));
        } else {
            sys::utimes_at(fd, name, m.atime, m.mtime)?;
        }
        Ok(())
    }

    /// Opens the directory `rel` (resolved inside the root), creating it and its parents when
    /// `create` is set.
    fn dir(&mut self, rel: &Path, create: bool) -> io::Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.cache {
            if p == rel {
                return Ok(fd.clone());
            }
        }
        let fd = match sys::resolve_dir(self.root.as_fd(), rel) {
            Ok(fd) => {
                if self.opts.whiteouts == WhiteoutMode::Delete && !self.touched.contains(rel) {
                    let st = sys::fstat(fd.as_fd())?;
                    self.touched.insert(rel.to_path_buf());
                    self.restore_times.push((
                        rel.to_path_buf(),
                        (st.st_atime, st.st_atime_nsec),
                        (st.st_mtime, st.st_mtime_nsec),
                    ));
                }
                fd
            }
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT)
                    && create
                    && !rel.as_os_str().is_empty() =>
            {
                let (parent_rel, name) = split(rel);
                let cn = CString::new(name.as_bytes()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "a name contains NUL")
                })?;
                let parent = self.dir(parent_rel, true)?;
                match sys::mkdir_at(parent.as_fd(), &cn, 0o755) {
                    Ok(()) => {
                        if self.opts.whiteouts == WhiteoutMode::Overlay {
                            self.copy_lower_dir_meta(rel, &parent, &cn)?;
                        }
                        self.touched.insert(rel.to_path_buf());
                        self.note_created(rel);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                sys::resolve_dir(self.root.as_fd(), rel)?
            }
            Err(e) => return Err(e),
        };
        let fd = Rc::new(fd);
        self.cache = Some((rel.to_path_buf(), fd.clone()));
        Ok(fd)
    }

    fn lowers(&mut self) -> io::Result<&[OwnedFd]> {
        if self.lowers.is_none() {
            let mut v = Vec::new();
            for p in &self.opts.parents {
                v.push(sys::open_dir(p).map_err(|e| {
                    io::Error::new(e.kind(), format!("open lower layer {}: {e}", p.display()))
                })?);
            }
            self.lowers = Some(v);
        }
        Ok(self.lowers.as_deref().unwrap_or_default())
    }

    /// An implicitly created directory in an upper layer takes the lower directory's owner,
    /// mode and times (as overlayfs's copy-up would), so the merged view does not change.
    fn copy_lower_dir_meta(&mut self, rel: &Path, parent: &OwnedFd, name: &CStr) -> io::Result<()> {
        let mut found = None;
        for lower in self.lowers()? {
            if let Ok(d) = sys::resolve_dir(lower.as_fd(), rel) {
                found = Some(sys::fstat(d.as_fd())?);
                break;
            }
        }
        let Some(st) = found else { return Ok(()) };
        let m = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            atime: (st.st_atime, st.st_atime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            xattrs: Vec::new(),
        };
        self.set_meta(parent, name, &m, true, rel)
    }

    fn whiteout(&mut self, parent_rel: &Path, name: &CStr) -> io::Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let parent = match self.dir(parent_rel, false) {
                    Ok(p) => p,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                };
                let was_dir = sys::lstat_at(parent.as_fd(), name)?
                    .as_ref()
                    .is_some_and(may_be_path_component);
                sys::remove_all_at(parent.as_fd(), name)?;
                if was_dir {
                    self.cache = None;
                }
                Ok(())
            }
            WhiteoutMode::Overlay => {
                let parent = self.dir(parent_rel, true)?;
                if let Some(st) = sys::lstat_at(parent.as_fd(), name)? {
                    sys::remove_all_at(parent.as_fd(), name)?;
                    if may_be_path_component(&st) {
                        self.cache = None;
                    }
                }
                sys::mknod_at(parent.as_fd(), name, libc::S_IFCHR, 0)
            }
        }
    }

    fn opaque(&mut self, dir_rel: &Path) -> io::Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let dir = match self.dir(dir_rel, false) {
                    Ok(p) => p,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                };
                for child in sys::list_dir(dir.as_fd())? {
                    if self.created.contains(&dir_rel.join(&child)) {
                        continue;
                    }
                    let c = CString::new(child.as_bytes()).expect("a file name has no NUL");
                    sys::remove_all_at(dir.as_fd(), &c)?;
                }
                self.cache = None;
                Ok(())
            }
            WhiteoutMode::Overlay => {
                let dir = self.dir(dir_rel, true)?;
                sys::set_xattr_at(dir.as_fd(), c".", c"trusted.overlay.opaque", b"y")
            }
        }
    }

    /// Links `rel` (named `name` in its parent) to the existing `target`, both inside the root.
    fn hard_link(&mut self, target: &Path, rel: &Path, name: &CStr) -> io::Result<()> {
        let (tparent_rel, tname) = split(target);
        let tname = CString::new(tname.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name contains NUL"))?;
        let exists = match self.dir(tparent_rel, false) {
            Ok(tp) => sys::lstat_at(tp.as_fd(), &tname)?.is_some(),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => false,
            Err(e) => return Err(e),
        };
        if !exists {
            let copied = self.opts.whiteouts == WhiteoutMode::Overlay
                && self.copy_up(target, tparent_rel, &tname)?;
            if !copied {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "target {} does not exist in the layer or below",
                        target.display()
                    ),
                ));
            }
        }
        let tp = self.dir(tparent_rel, false)?;
        let (parent_rel, _) = split(rel);
        let np = self.dir(parent_rel, true)?;
        sys::link_at(tp.as_fd(), &tname, np.as_fd(), name)
    }

    /// Copies `target` from the nearest lower layer holding it into the upper directory.
    fn copy_up(&mut self, target: &Path, tparent_rel: &Path, tname: &CStr) -> io::Result<bool> {
        let mut src: Option<(OwnedFd, libc::stat)> = None;
        for lower in self.lowers()? {
            let Ok(d) = sys::resolve_dir(lower.as_fd(), tparent_rel) else {
                continue;
            };
            if let Some(st) = sys::lstat_at(d.as_fd(), tname)? {
                if is_whiteout_dev(&st) {
                    return Ok(false);
                }
                if sys::is_dir(&st) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is a directory", target.display()),
                    ));
                }
                src = Some((d, st));
                break;
            }
        }
        let Some((sdir, st)) = src else {
            return Ok(false);
        };
        let up = self.dir(tparent_rel, true)?;
        copy_entry(sdir.as_fd(), tname, &st, up.as_fd(), tname, &mut self.buf)?;
        Ok(true)
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.cache = None;
        let mut times = std::mem::take(&mut self.restore_times);
        times.append(&mut self.dir_times);
        for (rel, at, mt) in times {
            let res = (|| -> io::Result<()> {
                if rel.as_os_str().is_empty() {
                    return sys::utimes_at(self.root.as_fd(), c".", at, mt);
                }
                let (parent_rel, name) = split(&rel);
                let cn = CString::new(name.as_bytes()).expect("checked at creation");
                let parent = match sys::resolve_dir(self.root.as_fd(), parent_rel) {
                    Ok(p) => p,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                };
                match sys::lstat_at(parent.as_fd(), &cn)? {
                    Some(st) if sys::is_dir(&st) => sys::utimes_at(parent.as_fd(), &cn, at, mt),
                    _ => Ok(()),
                }
            })();
            res.map_err(|source| Error::Entry {
                path: rel.display().to_string(),
                op: "set directory times",
                source,
            })?;
        }
        Ok(())
    }
}

/// Copies one non-directory entry (regular file, symlink, device, fifo, socket) with its owner,
/// mode, xattrs and times; hard links are the caller's business.
pub(crate) fn copy_entry(
    sdir: BorrowedFd<'_>,
    sname: &CStr,
    st: &libc::stat,
    ddir: BorrowedFd<'_>,
    dname: &CStr,
    buf: &mut [u8],
) -> io::Result<()> {
    let fmt = st.st_mode & libc::S_IFMT;
    match fmt {
        libc::S_IFREG => {
            let mut src = sys::open_read_at(sdir, sname, false)?;
            let mut dst = sys::create_at(ddir, dname, 0o600)?;
            copy_data(&mut src, &mut dst, buf)?;
        }
        libc::S_IFLNK => {
            let target = sys::read_link_at(sdir, sname)?;
            sys::symlink_at(&target, ddir, dname)?;
        }
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {
            sys::mknod_at(ddir, dname, fmt | 0o600, st.st_rdev)?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot copy file type {fmt:o}"),
            ))
        }
    }
    sys::chown_at(ddir, dname, st.st_uid, st.st_gid)?;
    if fmt != libc::S_IFLNK {
        sys::chmod_at(ddir, dname, st.st_mode & 0o7777)?;
    }
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

/// Copies file data, with `copy_file_range` first (reflinks or in-kernel copies) and a read/write
/// loop where it is not supported.
fn copy_data(src: &mut std::fs::File, dst: &mut std::fs::File, buf: &mut [u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: two valid descriptors; null offsets use and advance the file positions.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 30,
                0,
            )
        };
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => break,
                _ => return Err(e),
            }
        }
    }
    loop {
        let n = src.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        dst.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_neutralises_absolute_and_refuses_escapes() {
        assert_eq!(clean(Path::new("/etc/passwd")), Some("etc/passwd".into()));
        assert_eq!(clean(Path::new("./a/./b/")), Some("a/b".into()));
        assert_eq!(clean(Path::new("a/../b")), Some("b".into()));
        assert_eq!(clean(Path::new("../x")), None);
        assert_eq!(clean(Path::new("a/../../x")), None);
        assert_eq!(clean(Path::new("/../x")), None);
        assert_eq!(clean(Path::new("./")), Some("".into()));
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_time(b"1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_time(b"x"), None);
    }
}
