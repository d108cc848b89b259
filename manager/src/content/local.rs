//! The content store on a local filesystem.
//!
//! Layout under the root:
//!
//! ```text
//! blobs/sha256/<hex>            committed blobs (read-only once renamed here)
//! labels/sha256/<hex>.json      labels of a blob (JSON object, replaced atomically)
//! ingest/<sha256 of ref>/       one ingest in progress
//!     lock                      flock(LOCK_EX) held by the one writer (and by commit/abort)
//!     data                      the bytes so far
//!     ref                       the caller's reference
//!     expected, total           what the caller said the blob will be (optional)
//!     updatedat                 seconds since the epoch of the last open or close
//! ```
//!
//! A blob appears under its digest only by `rename(2)` of a fully written, fsynced and verified
//! ingest file, followed by an fsync of `blobs/sha256`; a crash at any point leaves either no
//! blob or the whole blob.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use super::{Error, Info, IngestStatus, ReadAt, Result, Store, Writer};
use crate::oci::Digest;

/// Longest ingest reference accepted (it is stored in a file, hashed for the directory name).
const MAX_REF_LEN: usize = 4096;

/// A content store rooted at a directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Writes `data` to `path` through a temporary file and a rename, so a reader sees the old or
/// the new content, never a mix. `durable` fsyncs the file first (labels); an ingest's
/// bookkeeping files are not fsynced: after a crash they are at worst stale, and the bytes are
/// verified against the digest at commit anyway.
fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_err("write", path))
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

impl LocalStore {
    /// Opens (creating when missing) the store at `root`.
    pub fn open(root: &Path) -> Result<LocalStore> {
        for sub in ["blobs/sha256", "labels/sha256", "ingest"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives once committed (for callers that want to mmap or sendfile).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn labels_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("labels/sha256")
            .join(format!("{}.json", digest.hex()))
    }

    fn ingest_dir(&self, reference: &str) -> Result<PathBuf> {
        if reference.is_empty() || reference.len() > MAX_REF_LEN || reference.contains('\0') {
            return Err(Error::InvalidReference(reference.to_string()));
        }
        Ok(self
            .root
            .join("ingest")
            .join(Digest::of(reference.as_bytes()).hex()))
    }

    fn read_labels(&self, digest: &Digest) -> Result<BTreeMap<String, String>> {
        let p = self.labels_path(digest);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Io {
                op: "parse labels",
                path: p,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    fn write_labels(&self, digest: &Digest, labels: &BTreeMap<String, String>) -> Result<()> {
        let p = self.labels_path(digest);
        if labels.is_empty() {
            return match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &p)(e)),
                _ => Ok(()),
            };
        }
        let data = serde_json::to_vec(labels).expect("labels serialise");
        write_atomic(&p, &data, true)
    }

    fn ingest_status(&self, dir: &Path) -> Result<Option<IngestStatus>> {
        let Some(reference) = read_opt(&dir.join("ref"))? else {
            return Ok(None);
        };
        let data = dir.join("data");
        let (offset, mtime) = match fs::metadata(&data) {
            Ok(m) => (m.len(), m.mtime().max(0) as u64),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(io_err("stat", &data)(e)),
        };
        let expected = read_opt(&dir.join("expected"))?.and_then(|s| s.parse().ok());
        let total = read_opt(&dir.join("total"))?.and_then(|s| s.parse().ok());
        let stamp = read_opt(&dir.join("updatedat"))?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(Some(IngestStatus {
            reference,
            offset,
            expected,
            total,
            updated_at: stamp.max(mtime),
        }))
    }

    /// Opens and locks the `lock` file of an ingest directory (created when missing). Whoever
    /// removes the directory (commit, abort) holds this lock, so after a successful lock whose
    /// file is still the one at the path, the directory stays. Retries when the directory was
    /// removed between the open and the lock.
    fn lock_ingest(&self, reference: &str, dir: &Path) -> Result<Flock<File>> {
        let data = dir.join("lock");
        for _ in 0..64 {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
            let f = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&data)
            {
                Ok(f) => f,
                // Removed between the mkdir and the open.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open", &data)(e)),
            };
            let locked = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(Error::Locked {
                        reference: reference.to_string(),
                    })
                }
                Err((_, errno)) => return Err(io_err("lock", &data)(io::Error::from(errno))),
            };
            // The ingest may have been aborted (directory removed) after our open: then we hold
            // a lock on an unlinked file; start again.
            let ours = locked.metadata().map_err(io_err("stat", &data))?;
            match fs::metadata(&data) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => return Ok(locked),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &data)(e)),
            }
        }
        Err(Error::Locked {
            reference: reference.to_string(),
        })
    }
}

impl Store for LocalStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let p = self.blob_path(digest);
        let m = match fs::metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(digest.clone()))
            }
            Err(e) => return Err(io_err("stat", &p)(e)),
        };
        Ok(Info {
            digest: digest.clone(),
            size: m.len(),
            created_at: m.mtime().max(0) as u64,
            labels: self.read_labels(digest)?,
        })
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn ReadAt>> {
        let p = self.blob_path(digest);
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(digest.clone()))
            }
            Err(e) => return Err(io_err("open", &p)(e)),
        };
        let size = file.metadata().map_err(io_err("stat", &p))?.len();
        Ok(Box::new(LocalReader { file, size }))
    }

    fn writer(&self, reference: &str, expected: Option<(&Digest, u64)>) -> Result<Box<dyn Writer>> {
        let dir = self.ingest_dir(reference)?;
        let lock = self.lock_ingest(reference, &dir)?;
        let data = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data)
            .map_err(io_err("open", &data))?;
        write_atomic(&dir.join("ref"), reference.as_bytes(), true)?;
        if let Some((d, size)) = expected {
            write_atomic(&dir.join("expected"), d.as_str().as_bytes(), false)?;
            write_atomic(&dir.join("total"), size.to_string().as_bytes(), false)?;
        }
        write_atomic(&dir.join("updatedat"), now().to_string().as_bytes(), false)?;

        // Resume: the digest state is rebuilt from the bytes already there.
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", &data))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(io_err("read", &data))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        let dir_expected = dir.join("expected");
        let dir_total = dir.join("total");
        let mut w = LocalWriter {
            store_root: self.root.clone(),
            dir,
            reference: reference.to_string(),
            file: Some(file),
            lock: Some(lock),
            hasher,
            offset,
            expected: match expected {
                Some((d, s)) => Some((d.clone(), s)),
                // A resume without expectations keeps the ones the ingest was started with.
                None => match (
                    read_opt(&dir_expected)?.and_then(|s| s.parse::<Digest>().ok()),
                    read_opt(&dir_total)?.and_then(|s| s.parse::<u64>().ok()),
                ) {
                    (Some(d), Some(t)) => Some((d, t)),
                    _ => None,
                },
            },
        };
        // More bytes than the blob can have: the ingest is garbage, start over.
        if matches!(&w.expected, Some((_, total)) if offset > *total) {
            w.truncate()?;
        }
        Ok(Box::new(w))
    }

    fn set_labels(&self, digest: &Digest, labels: BTreeMap<String, String>) -> Result<Info> {
        // The blob must exist; the labels are replaced as a whole.
        self.info(digest)?;
        self.write_labels(digest, &labels)?;
        self.info(digest)
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(digest.clone()))
            }
            Err(e) => return Err(io_err("remove", &p)(e)),
        }
        self.write_labels(digest, &BTreeMap::new())?;
        fsync_dir(&self.root.join("blobs/sha256"))
    }

    fn list(&self) -> Result<Vec<Info>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let entry = entry.map_err(io_err("read directory", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            match self.info(&digest) {
                Ok(i) => out.push(i),
                Err(Error::NotFound(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    fn ingests(&self) -> Result<Vec<IngestStatus>> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let entry = entry.map_err(io_err("read directory", &dir))?;
            let path = entry.path();
            match self.ingest_status(&path)? {
                // A crash between the rename into place and the removal of the ingest: the
                // blob is committed, only the bookkeeping is left.
                Some(s)
                    if !path.join("data").exists()
                        && s.expected
                            .as_ref()
                            .is_some_and(|d| self.blob_path(d).exists()) =>
                {
                    if let Ok(lock) = self.lock_ingest(&s.reference, &path) {
                        if !path.join("data").exists() {
                            let _ = fs::remove_dir_all(&path);
                        }
                        drop(lock);
                    }
                }
                Some(s) => out.push(s),
                None => {
                    // No `ref`: a writer crashed before writing it (or is about to). Nobody can
                    // name it to abort it: removed here when no writer holds it.
                    if let Ok(lock) = self.lock_ingest("(unnamed)", &path) {
                        if !path.join("ref").exists() {
                            let _ = fs::remove_dir_all(&path);
                        }
                        drop(lock);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    fn abort(&self, reference: &str) -> Result<()> {
        let dir = self.ingest_dir(reference)?;
        if !dir.exists() {
            return Err(Error::InvalidReference(format!(
                "{reference} (no such ingest)"
            )));
        }
        let lock = self.lock_ingest(reference, &dir)?;
        let res = fs::remove_dir_all(&dir).map_err(io_err("remove", &dir));
        drop(lock);
        res
    }
}

struct LocalReader {
    file: File,
    size: u64,
}

impl Read for LocalReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl ReadAt for LocalReader {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

struct LocalWriter {
    store_root: PathBuf,
    dir: PathBuf,
    reference: String,
    /// `None` once committed.
    file: Option<File>,
    /// Held until the ingest directory is gone or the writer dropped.
    lock: Option<Flock<File>>,
    hasher: Sha256,
    offset: u64,
    expected: Option<(Digest, u64)>,
}

impl LocalWriter {
    fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn discard(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        self.file = None;
        self.lock = None;
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Writer for LocalWriter {
    fn offset(&self) -> u64 {
        self.offset
    }

    fn truncate(&mut self) -> Result<()> {
        let data = self.data_path();
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| Error::InvalidReference(self.reference.clone()))?;
        f.set_len(0).map_err(io_err("truncate", &data))?;
        f.seek(SeekFrom::Start(0)).map_err(io_err("seek", &data))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    fn commit(
        mut self: Box<Self>,
        expected: Option<(&Digest, u64)>,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest> {
        let data = self.data_path();
        let expected = expected
            .map(|(d, s)| (d.clone(), s))
            .or(self.expected.clone());
        let f = self
            .file
            .as_ref()
            .ok_or_else(|| Error::InvalidReference(self.reference.clone()))?;
        f.sync_all().map_err(io_err("fsync", &data))?;
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some((digest, size)) = &expected {
            if self.offset != *size {
                let err = Error::SizeMismatch {
                    digest: digest.clone(),
                    expected: *size,
                    actual: self.offset,
                };
                self.discard();
                return Err(err);
            }
            if *digest != actual {
                self.discard();
                return Err(Error::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        let store = LocalStore {
            root: self.store_root.clone(),
        };
        let target = store.blob_path(&actual);
        if target.exists() {
            // Already there: idempotent; the labels given are merged in.
            self.discard();
            if !labels.is_empty() {
                let mut all = store.read_labels(&actual)?;
                all.extend(labels);
                store.write_labels(&actual, &all)?;
            }
            return Ok(actual);
        }
        // Committed blobs are read-only.
        let _ = fs::set_permissions(
            &data,
            <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o444),
        );
        fs::rename(&data, &target).map_err(io_err("rename into place", &target))?;
        fsync_dir(&self.store_root.join("blobs/sha256"))?;
        self.discard();
        // The blob is committed now: a caller told "failed" would retry or clean up content
        // that is in fact there. Labels are advisory (GC hints), so a failure to write them is
        // said in the log and the commit stands.
        if !labels.is_empty() {
            if let Err(e) = store.write_labels(&actual, &labels) {
                tracing::warn!(
                    digest = actual.as_str(),
                    "blob committed, labels not written: {e}"
                );
            }
        }
        Ok(actual)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Kept for a resume; mark when it was last touched.
            let _ = write_atomic(
                &self.dir.join("updatedat"),
                now().to_string().as_bytes(),
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_store_passes_the_shared_suite() {
        for (name, case) in crate::content::testsuite::CASES {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::open(dir.path()).unwrap();
            eprintln!("content testsuite: {name}");
            case(&store);
        }
    }

    #[test]
    fn locked_across_processes_is_locked_across_handles() {
        // Two stores on one root behave like two processes: flock is per open file description.
        let dir = tempfile::tempdir().unwrap();
        let a = LocalStore::open(dir.path()).unwrap();
        let b = LocalStore::open(dir.path()).unwrap();
        let _w = a.writer("x", None).unwrap();
        assert!(matches!(b.writer("x", None), Err(Error::Locked { .. })));
        assert!(matches!(b.abort("x"), Err(Error::Locked { .. })));
    }

    #[test]
    fn ingest_layout_is_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        let mut w = s.writer("pull-1", Some((&d, 5))).unwrap();
        w.write_all(b"he").unwrap();
        drop(w);
        let ing = dir.path().join("ingest").join(Digest::of(b"pull-1").hex());
        assert_eq!(fs::read(ing.join("data")).unwrap(), b"he");
        assert_eq!(fs::read_to_string(ing.join("ref")).unwrap(), "pull-1");
        assert_eq!(
            fs::read_to_string(ing.join("expected")).unwrap(),
            d.as_str()
        );
        assert_eq!(fs::read_to_string(ing.join("total")).unwrap(), "5");
        assert!(ing.join("updatedat").exists());
        let w = s.writer("pull-1", None).unwrap();
        let mut w = w;
        w.write_all(b"llo").unwrap();
        w.commit(None, BTreeMap::new()).unwrap();
        assert!(!ing.exists());
        assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"hello");
    }
}

#[cfg(test)]
mod crash_tests {
    use super::*;

    #[test]
    fn an_ingest_without_its_ref_is_cleaned_by_listing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        // What a crash between the lock and the `ref` file leaves.
        let orphan = dir.path().join("ingest").join(Digest::of(b"x").hex());
        fs::create_dir_all(&orphan).unwrap();
        fs::write(orphan.join("lock"), b"").unwrap();
        fs::write(orphan.join("data"), b"partial").unwrap();
        assert!(s.ingests().unwrap().is_empty());
        assert!(!orphan.exists());
        // What a crash between the rename of the data into place and the removal leaves.
        let d = Digest::of(b"blob");
        let mut w = s.writer("committed", Some((&d, 4))).unwrap();
        w.write_all(b"blob").unwrap();
        drop(w);
        let ing = dir
            .path()
            .join("ingest")
            .join(Digest::of(b"committed").hex());
        fs::rename(ing.join("data"), s.blob_path(&d)).unwrap();
        assert!(s.ingests().unwrap().is_empty());
        assert!(!ing.exists());
        assert_eq!(s.read_all(&d).unwrap(), b"blob");
        // A live ingest is listed and kept.
        let mut w = s.writer("live", None).unwrap();
        w.write_all(b"abc").unwrap();
        assert_eq!(s.ingests().unwrap().len(), 1);
    }
}
