//! Unit tests of unpacking that need no mounts and no root: applying into a temp dir in
//! delete (native) mode, hostile layers, decompression, chain ids, and unpack_image on the
//! native snapshotter with a directory of blobs as content store.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::tartest::{Meta, TarWriter};
use super::*;
use crate::content::{self, IngestStatus, ReadAt, Store};
use crate::oci::{self, RootFs};
use crate::snapshots::NativeSnapshotter;

fn me() -> (u64, u64) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (u64::from(libc::getuid()), u64::from(libc::getgid())) }
}

fn m(mode: u32) -> Meta {
    let (u, g) = me();
    Meta::mode(mode).owner(u, g)
}

fn apply(dest: &Path, tar: &[u8]) -> Result<ApplyStats, Error> {
    apply_layer(dest, tar, &ApplyOptions::default())
}

#[test]
fn applies_files_dirs_links_modes_and_mtimes() {
    let t = tempfile::tempdir().unwrap();
    let mut w = TarWriter::new();
    w.dir("d", m(0o750).mtime(1000))
        .file("d/f", b"hello", m(0o4755).mtime(2000))
        .dir("s", m(0o1777).mtime(3000))
        .symlink_with("d/l", "f", m(0o777))
        .hardlink("d/h", "d/f")
        .fifo("p", m(0o600).mtime(4000));
    let mut frac = m(0o644);
    frac.pax.push(("mtime".into(), b"1700000000.25".to_vec()));
    w.file("d/frac", b"x", frac);
    // A file in a directory the layer does not declare: the directory is created.
    w.file("implicit/deeper/f", b"i", m(0o600));
    let tar = w.finish();
    let stats = apply(t.path(), &tar).unwrap();
    assert_eq!(stats.diff_id, oci::Digest::of(&tar));
    assert_eq!(stats.size, tar.len() as u64);
    assert_eq!(stats.entries, 8);

    let r = t.path();
    assert_eq!(fs::read(r.join("d/f")).unwrap(), b"hello");
    let f = fs::symlink_metadata(r.join("d/f")).unwrap();
    assert_eq!(
        f.mode() & 0o7777,
        0o4755,
        "setuid survives (chmod after chown)"
    );
    assert_eq!(f.mtime(), 2000);
    assert_eq!(f.nlink(), 2);
    let h = fs::symlink_metadata(r.join("d/h")).unwrap();
    assert_eq!(h.ino(), f.ino(), "hard link shares the inode");
    assert_eq!(fs::read_link(r.join("d/l")).unwrap(), Path::new("f"));
    let d = fs::symlink_metadata(r.join("d")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o750);
    assert_eq!(d.mtime(), 1000, "directory mtime is set after its contents");
    let s = fs::symlink_metadata(r.join("s")).unwrap();
    assert_eq!((s.mode() & 0o7777, s.mtime()), (0o1777, 3000));
    let p = fs::symlink_metadata(r.join("p")).unwrap();
    assert!(p.file_type().is_fifo());
    assert_eq!((p.mode() & 0o7777, p.mtime()), (0o600, 4000));
    let fr = fs::symlink_metadata(r.join("d/frac")).unwrap();
    assert_eq!((fr.mtime(), fr.mtime_nsec()), (1_700_000_000, 250_000_000));
    assert_eq!(fs::read(r.join("implicit/deeper/f")).unwrap(), b"i");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let t = tempfile::tempdir().unwrap();
    let mut w = TarWriter::new();
    w.file("a", b"file", m(0o644))
        .dir("a", m(0o755)) // a file replaced by a directory
        .file("a/in", b"x", m(0o644))
        .dir("b", m(0o755))
        .file("b/in", b"x", m(0o644))
        .symlink_with("b", "a", m(0o777)) // a directory replaced by a symlink
        .dir("c", m(0o700))
        .dir("c", m(0o711)); // a directory over a directory keeps its contents
    apply(t.path(), &w.finish()).unwrap();
    assert_eq!(fs::read(t.path().join("a/in")).unwrap(), b"x");
    assert_eq!(fs::read_link(t.path().join("b")).unwrap(), Path::new("a"));
    let c = fs::metadata(t.path().join("c")).unwrap();
    assert_eq!(c.mode() & 0o777, 0o711);
}

#[test]
fn a_replaced_symlink_in_a_path_is_resolved_again() {
    let t = tempfile::tempdir().unwrap();
    let mut w = TarWriter::new();
    w.dir("one", m(0o755))
        .dir("two", m(0o755))
        .symlink_with("x", "one", m(0o777))
        .file("x/a", b"in one", m(0o644))
        .symlink_with("x", "two", m(0o777))
        .file("x/b", b"in two", m(0o644));
    apply(t.path(), &w.finish()).unwrap();
    assert_eq!(fs::read(t.path().join("one/a")).unwrap(), b"in one");
    assert_eq!(fs::read(t.path().join("two/b")).unwrap(), b"in two");
    assert!(!t.path().join("one/b").exists());
}

#[test]
fn whiteouts_delete_in_native_mode() {
    let t = tempfile::tempdir().unwrap();
    let mut l1 = TarWriter::new();
    l1.file("a", b"a", m(0o644))
        .dir("dir", m(0o755))
        .file("dir/x", b"x", m(0o644))
        .dir("dir/sub", m(0o755))
        .file("dir/sub/y", b"y", m(0o644))
        .file("keep", b"k", m(0o644))
        .dir("gone-dir", m(0o755))
        .file("gone-dir/z", b"z", m(0o644));
    apply(t.path(), &l1.finish()).unwrap();
    let mut l2 = TarWriter::new();
    l2.whiteout("", "a")
        .whiteout("", "gone-dir")
        .whiteout("", "never-existed")
        .whiteout("no-such-dir", "x")
        .dir("dir", m(0o755))
        .file(
            "dir/+early",
            b"kept: before the marker, same layer",
            m(0o644),
        )
        .opaque("dir")
        .file("dir/new", b"n", m(0o644));
    apply(t.path(), &l2.finish()).unwrap();
    let r = t.path();
    assert!(!r.join("a").exists());
    assert!(!r.join("gone-dir").exists());
    assert!(r.join("keep").exists());
    let mut names: Vec<String> = fs::read_dir(r.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["+early", "new"]);
    // No whiteout file is left behind in native mode.
    assert!(!r.join(".wh.a").exists() && !r.join("dir/.wh..wh..opq").exists());
}

#[test]
fn overlay_mode_whiteout_is_a_char_device() {
    let t = tempfile::tempdir().unwrap();
    let mut w = TarWriter::new();
    w.dir("d", m(0o755))
        .whiteout("d", "gone")
        .whiteout("", "top");
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..ApplyOptions::default()
    };
    apply_layer(t.path(), &w.finish()[..], &opts).unwrap();
    for p in ["d/gone", "top"] {
        let md = fs::symlink_metadata(t.path().join(p)).unwrap();
        assert!(md.file_type().is_char_device(), "{p}");
        assert_eq!(md.rdev(), 0, "{p}: a whiteout is device 0:0");
    }
}

#[test]
fn overlay_xattrs_from_a_layer_are_dropped() {
    let t = tempfile::tempdir().unwrap();
    let mut w = TarWriter::new();
    w.dir(
        "d",
        m(0o755)
            .xattr("trusted.overlay.redirect", b"/etc")
            .xattr("user.overlay.opaque", b"y"),
    );
    apply(t.path(), &w.finish()).unwrap();
    let p = sys::cstring(&t.path().join("d")).unwrap();
    let xs = sys::lget_xattrs(&p).unwrap();
    assert!(xs.is_empty(), "overlay xattrs must not be applied: {xs:?}");
}

#[test]
fn a_later_directory_entry_replaces_the_directory_xattrs() {
    let t = tempfile::tempdir().unwrap();
    let mut w = TarWriter::new();
    w.dir("d", m(0o755).xattr("user.a", b"1").xattr("user.b", b"2"));
    apply(t.path(), &w.finish()).unwrap();
    let mut w = TarWriter::new();
    w.dir("d", m(0o700).xattr("user.b", b"3"));
    apply(t.path(), &w.finish()).unwrap();
    let p = sys::cstring(&t.path().join("d")).unwrap();
    let xs = sys::lget_xattrs(&p).unwrap();
    assert_eq!(xs, [(c"user.b".to_owned(), b"3".to_vec())]);
}

/// A root directory with a canary file beside it, outside.
struct Sandbox {
    _t: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    canary: PathBuf,
    canary_ino: u64,
}

impl Sandbox {
    fn new() -> Sandbox {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        let canary = outside.join("canary");
        fs::write(&canary, b"untouched").unwrap();
        let canary_ino = fs::metadata(&canary).unwrap().ino();
        Sandbox {
            _t: t,
            root,
            outside,
            canary,
            canary_ino,
        }
    }

    /// Nothing outside the root changed.
    fn check(&self, case: &str) {
        let md = fs::symlink_metadata(&self.canary)
            .unwrap_or_else(|e| panic!("{case}: the canary is gone: {e}"));
        assert!(md.is_file(), "{case}: the canary is no longer a file");
        assert_eq!(md.ino(), self.canary_ino, "{case}: the canary was replaced");
        assert_eq!(md.nlink(), 1, "{case}: the canary got a hard link");
        assert_eq!(fs::read(&self.canary).unwrap(), b"untouched", "{case}");
        assert_eq!(md.mode() & 0o7777, 0o644, "{case}: canary mode changed");
        let names: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
        assert_eq!(names.len(), 1, "{case}: something was created outside");
    }
}

fn abs(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn hostile_dotdot_path_refused() {
    let s = Sandbox::new();
    let mut w = TarWriter::new();
    w.file("../outside/canary", b"pwned", m(0o644));
    let e = apply(&s.root, &w.finish()).unwrap_err();
    assert!(matches!(e, Error::Hostile { .. }), "{e}");
    assert!(e.to_string().contains("../outside/canary"), "{e}");
    let mut w = TarWriter::new();
    w.file("a/../../outside/canary", b"pwned", m(0o644));
    assert!(matches!(
        apply(&s.root, &w.finish()),
        Err(Error::Hostile { .. })
    ));
    s.check("../ path");
}

#[test]
fn hostile_absolute_path_stays_inside() {
    let s = Sandbox::new();
    let mut w = TarWriter::new();
    w.file(&abs(&s.canary), b"pwned", m(0o644));
    apply(&s.root, &w.finish()).unwrap();
    let inside = s.root.join(abs(&s.canary).trim_start_matches('/'));
    assert_eq!(
        fs::read(inside).unwrap(),
        b"pwned",
        "written under the root instead"
    );
    s.check("absolute path");
}

#[test]
fn hostile_write_through_symlink_stays_inside() {
    let s = Sandbox::new();
    // An absolute symlink to the outside directory, then a write through it.
    let mut w = TarWriter::new();
    w.symlink_with("evil", &abs(&s.outside), m(0o777))
        .file("evil/canary", b"pwned", m(0o644));
    let _ = apply(&s.root, &w.finish());
    s.check("absolute symlink + write");
    // A relative symlink climbing with `..`: resolves to the root itself.
    let mut w = TarWriter::new();
    w.symlink_with("up", "../../../../../../..", m(0o777))
        .file("up/canary", b"inside", m(0o644))
        .dir("outside", m(0o755))
        .symlink_with("up2", "../outside", m(0o777))
        .file("up2/canary", b"inside2", m(0o644));
    apply(&s.root, &w.finish()).unwrap();
    assert_eq!(fs::read(s.root.join("canary")).unwrap(), b"inside");
    assert_eq!(fs::read(s.root.join("outside/canary")).unwrap(), b"inside2");
    s.check("relative symlink + write");
    // A dangling symlink is not a directory to create things in.
    let mut w = TarWriter::new();
    w.symlink_with("dangling", "../nowhere", m(0o777))
        .file("dangling/canary", b"pwned", m(0o644));
    let e = apply(&s.root, &w.finish()).unwrap_err();
    assert!(e.to_string().contains("dangling/canary"), "{e}");
    // A symlink to the canary replaced by a file of the same name: the link goes, not the canary.
    let mut w = TarWriter::new();
    w.symlink_with("link", &abs(&s.canary), m(0o777))
        .file("link", b"pwned", m(0o644));
    apply(&s.root, &w.finish()).unwrap();
    assert_eq!(fs::read(s.root.join("link")).unwrap(), b"pwned");
    // A directory entry and metadata through a symlink to the outside.
    let mut w = TarWriter::new();
    w.symlink_with("out", &abs(&s.outside), m(0o777))
        .dir("out", m(0o700))
        .symlink_with("c", &abs(&s.canary), m(0o777))
        .dir("c/x", m(0o700));
    let _ = apply(&s.root, &w.finish());
    s.check("symlink + mkdir");
}

#[test]
fn hostile_hard_links_refused_or_inside() {
    let s = Sandbox::new();
    let mut w = TarWriter::new();
    w.hardlink("h", "../outside/canary");
    assert!(matches!(
        apply(&s.root, &w.finish()),
        Err(Error::Hostile { .. })
    ));
    // Absolute: means the same path inside the root, which does not exist.
    let mut w = TarWriter::new();
    w.hardlink("h", &abs(&s.canary));
    let e = apply(&s.root, &w.finish()).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Through a symlink in the target's path.
    let mut w = TarWriter::new();
    w.symlink_with("evil", &abs(&s.outside), m(0o777))
        .hardlink("h2", "evil/canary");
    assert!(apply(&s.root, &w.finish()).is_err());
    // To a symlink pointing out: links the symlink itself, not the canary.
    let mut w = TarWriter::new();
    w.symlink_with("sl", &abs(&s.canary), m(0o777))
        .hardlink("h3", "sl");
    apply(&s.root, &w.finish()).unwrap();
    let h3 = fs::symlink_metadata(s.root.join("h3")).unwrap();
    assert!(h3.file_type().is_symlink());
    assert_ne!(h3.ino(), s.canary_ino);
    // ... and a file written over that link replaces it.
    let mut w = TarWriter::new();
    w.file("h3", b"pwned", m(0o644));
    apply(&s.root, &w.finish()).unwrap();
    s.check("hard links");
}

#[test]
fn hostile_whiteouts_refused_or_inside() {
    let s = Sandbox::new();
    for name in [".wh..", "d/.wh..", ".wh.", "d/.wh.", "d/.wh.."] {
        let mut w = TarWriter::new();
        w.dir("d", m(0o755)).file(name, b"", m(0o644));
        let e = apply(&s.root, &w.finish()).unwrap_err();
        assert!(matches!(e, Error::Hostile { .. }), "{name}: {e}");
    }
    // `..` in the whiteout's directory part climbing out.
    let mut w = TarWriter::new();
    w.file("../outside/.wh.canary", b"", m(0o644));
    assert!(matches!(
        apply(&s.root, &w.finish()),
        Err(Error::Hostile { .. })
    ));
    // Whiteouts and opaque markers through symlinks to the outside.
    for mode in [WhiteoutMode::Delete, WhiteoutMode::Overlay] {
        let opts = ApplyOptions {
            whiteouts: mode,
            ..ApplyOptions::default()
        };
        let mut w = TarWriter::new();
        w.symlink_with("evil", &abs(&s.outside), m(0o777))
            .whiteout("evil", "canary")
            .opaque("evil");
        let _ = apply_layer(&s.root, &w.finish()[..], &opts);
        let mut w = TarWriter::new();
        w.symlink_with("c", &abs(&s.canary), m(0o777))
            .whiteout("", "c");
        let _ = apply_layer(&s.root, &w.finish()[..], &opts);
        s.check(&format!("whiteouts through symlinks ({mode:?})"));
    }
    // The root itself cannot be replaced by a non-directory.
    let mut w = TarWriter::new();
    w.file("./", b"", m(0o644));
    assert!(matches!(
        apply(&s.root, &w.finish()),
        Err(Error::Hostile { .. })
    ));
    s.check("whiteouts");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd_enc(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

#[test]
fn diff_id_through_each_compression() {
    let mut w = TarWriter::new();
    w.file("f", &vec![3u8; 100_000], m(0o644));
    let tar = w.finish();
    for (c, blob) in [
        (Compression::None, tar.clone()),
        (Compression::Gzip, gzip(&tar)),
        (Compression::Zstd, zstd_enc(&tar)),
    ] {
        let t = tempfile::tempdir().unwrap();
        let r = decompress(&blob[..], c).unwrap();
        let st = apply_layer(t.path(), r, &ApplyOptions::default()).unwrap();
        assert_eq!(st.diff_id, oci::Digest::of(&tar), "{c:?}");
        assert_eq!(fs::read(t.path().join("f")).unwrap().len(), 100_000);
    }
    // A truncated stream is an error, not a short layer.
    let t = tempfile::tempdir().unwrap();
    let g = gzip(&tar);
    let r = decompress(&g[..g.len() / 2], Compression::Gzip).unwrap();
    assert!(apply_layer(t.path(), r, &ApplyOptions::default()).is_err());
}

#[test]
fn pipelined_reader_passes_data_errors_and_early_stops() {
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let got = pipelined(&data[..], |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    });
    assert_eq!(got, data);
    // An error of the source reaches the consumer.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
    }
    let err = pipelined(Failing(600_000), |r| r.read_to_end(&mut Vec::new())).unwrap_err();
    assert_eq!(err.to_string(), "disk on fire");
    // A consumer that stops early does not leave the helper blocked (the scope would hang).
    let endless = std::io::repeat(7);
    let first = pipelined(endless, |r| {
        let mut b = [0u8; 10];
        r.read_exact(&mut b).unwrap();
        b
    });
    assert_eq!(first, [7u8; 10]);
}

#[test]
fn chain_ids_follow_the_image_spec() {
    let a = oci::Digest::of(b"a");
    let b = oci::Digest::of(b"b");
    let c = oci::Digest::of(b"c");
    let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
    assert_eq!(ids[0], a);
    let ab = oci::Digest::of(format!("{a} {b}").as_bytes());
    assert_eq!(ids[1], ab);
    assert_eq!(ids[2], oci::Digest::of(format!("{ab} {c}").as_bytes()));
}

/// A content store of blobs in a directory (`<dir>/<hex>`), read-only: enough for unpacking.
pub(crate) struct DirStore(pub PathBuf);

struct FileReader(fs::File, u64);

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl ReadAt for FileReader {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
    }
}

impl DirStore {
    fn path(&self, d: &oci::Digest) -> PathBuf {
        self.0.join(d.hex())
    }
    fn put(&self, data: &[u8]) -> oci::Digest {
        let d = oci::Digest::of(data);
        fs::write(self.path(&d), data).unwrap();
        d
    }
}

impl Store for DirStore {
    fn info(&self, digest: &oci::Digest) -> content::Result<content::Info> {
        let md = fs::metadata(self.path(digest))
            .map_err(|_| content::Error::NotFound(digest.clone()))?;
        Ok(content::Info {
            digest: digest.clone(),
            size: md.len(),
            created_at: 0,
            labels: BTreeMap::new(),
        })
    }
    fn reader(&self, digest: &oci::Digest) -> content::Result<Box<dyn ReadAt>> {
        let f = fs::File::open(self.path(digest))
            .map_err(|_| content::Error::NotFound(digest.clone()))?;
        let n = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Box::new(FileReader(f, n)))
    }
    fn writer(
        &self,
        reference: &str,
        _: Option<(&oci::Digest, u64)>,
    ) -> content::Result<Box<dyn content::Writer>> {
        Err(content::Error::InvalidReference(format!(
            "{reference}: the test store is read-only"
        )))
    }
    fn set_labels(
        &self,
        digest: &oci::Digest,
        _: BTreeMap<String, String>,
    ) -> content::Result<content::Info> {
        self.info(digest)
    }
    fn delete(&self, digest: &oci::Digest) -> content::Result<()> {
        fs::remove_file(self.path(digest)).map_err(|_| content::Error::NotFound(digest.clone()))
    }
    fn list(&self) -> content::Result<Vec<content::Info>> {
        Ok(Vec::new())
    }
    fn ingests(&self) -> content::Result<Vec<IngestStatus>> {
        Ok(Vec::new())
    }
    fn abort(&self, _: &str) -> content::Result<()> {
        Ok(())
    }
}

fn image(store: &DirStore, layers: &[(&str, Vec<u8>)]) -> (Manifest, ImageConfig) {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (media_type, tar) in layers {
        diff_ids.push(oci::Digest::of(tar));
        let blob = match Compression::of_layer(media_type).unwrap() {
            Compression::None => tar.clone(),
            Compression::Gzip => gzip(tar),
            Compression::Zstd => zstd_enc(tar),
        };
        let digest = store.put(&blob);
        descs.push(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: blob.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
        });
    }
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        ..ImageConfig::default()
    };
    let cfg = store.put(&serde_json::to_vec(&config).unwrap());
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: oci::MEDIA_OCI_CONFIG.into(),
            digest: cfg,
            size: 0,
            urls: None,
            annotations: None,
            platform: None,
        },
        layers: descs,
        annotations: None,
    };
    (manifest, config)
}

#[test]
fn unpack_image_on_native_commits_chain_ids_and_skips_present_layers() {
    let t = tempfile::tempdir().unwrap();
    let blobs = t.path().join("blobs");
    fs::create_dir(&blobs).unwrap();
    let store = DirStore(blobs);
    let mut l0 = TarWriter::new();
    l0.dir("etc", m(0o755))
        .file("etc/a", b"0", m(0o644))
        .file("etc/gone", b"0", m(0o644));
    let mut l1 = TarWriter::new();
    l1.dir("etc", m(0o755))
        .file("etc/b", b"1", m(0o644))
        .whiteout("etc", "gone");
    let mut l2 = TarWriter::new();
    l2.file("etc/a", b"2", m(0o600)).hardlink("etc/a2", "etc/a");
    let (manifest, config) = image(
        &store,
        &[
            (oci::MEDIA_OCI_LAYER_GZIP, l0.finish()),
            (oci::MEDIA_OCI_LAYER_ZSTD, l1.finish()),
            (oci::MEDIA_OCI_LAYER, l2.finish()),
        ],
    );
    let sn = NativeSnapshotter::open(&t.path().join("sn")).unwrap();
    let mut events = Vec::new();
    let top = unpack_image(&store, &sn, &manifest, &config, &mut |e| events.push(e)).unwrap();
    let chains = chain_ids(&config.rootfs.diff_ids);
    assert_eq!(top, chains[2].to_string());
    assert_eq!(events.len(), 6, "{events:?}");
    let infos = sn.walk().unwrap();
    let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        chains.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "only the chain ids are left, no extraction snapshot"
    );
    assert_eq!(infos[1].parent.as_deref(), Some(chains[0].as_str()));
    assert_eq!(
        infos[2].labels.get(LABEL_DIFF_ID).map(String::as_str),
        Some(config.rootfs.diff_ids[2].as_str())
    );
    let mounts = sn.mounts(&top).unwrap();
    let fs_dir = PathBuf::from(&mounts[0].source);
    assert_eq!(fs::read(fs_dir.join("etc/a")).unwrap(), b"2");
    assert_eq!(fs::read(fs_dir.join("etc/b")).unwrap(), b"1");
    assert!(!fs_dir.join("etc/gone").exists());
    assert_eq!(
        fs::metadata(fs_dir.join("etc/a2")).unwrap().ino(),
        fs::metadata(fs_dir.join("etc/a")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(fs_dir.join("etc/a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Again: every layer is already there.
    let mut again = Vec::new();
    unpack_image(&store, &sn, &manifest, &config, &mut |e| again.push(e)).unwrap();
    assert!(
        again
            .iter()
            .all(|e| matches!(e, UnpackEvent::LayerSkipped { .. })),
        "{again:?}"
    );
    assert_eq!(again.len(), 3);
}

#[test]
fn unpack_image_refuses_a_wrong_diff_id_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let blobs = t.path().join("blobs");
    fs::create_dir(&blobs).unwrap();
    let store = DirStore(blobs);
    let mut l0 = TarWriter::new();
    l0.file("a", b"0", m(0o644));
    let (manifest, mut config) = image(&store, &[(oci::MEDIA_OCI_LAYER_GZIP, l0.finish())]);
    let wrong = oci::Digest::of(b"not this layer");
    config.rootfs.diff_ids[0] = wrong.clone();
    let sn = NativeSnapshotter::open(&t.path().join("sn")).unwrap();
    let e = unpack_image(&store, &sn, &manifest, &config, &mut |_| {}).unwrap_err();
    match &e {
        Error::DiffIdMismatch {
            layer, expected, ..
        } => {
            assert_eq!(layer, &manifest.layers[0].digest);
            assert_eq!(expected, &wrong);
        }
        other => panic!("expected a diff_id mismatch, got {other}"),
    }
    assert!(e.to_string().contains(manifest.layers[0].digest.as_str()));
    assert!(
        sn.walk().unwrap().is_empty(),
        "the extraction snapshot is removed"
    );
    // Mismatched counts and unknown media types are clear errors too.
    config.rootfs.diff_ids.push(wrong);
    assert!(matches!(
        unpack_image(&store, &sn, &manifest, &config, &mut |_| {}),
        Err(Error::LayerCount {
            layers: 1,
            diff_ids: 2
        })
    ));
    config.rootfs.diff_ids.pop();
    let mut m2 = manifest.clone();
    m2.layers[0].media_type = "application/octet-stream".into();
    assert!(matches!(
        unpack_image(&store, &sn, &m2, &config, &mut |_| {}),
        Err(Error::UnsupportedMediaType { .. })
    ));
}
