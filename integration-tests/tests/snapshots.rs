//! kapseld's snapshotters and layer unpacker against the real kernel (root: mounts, overlayfs,
//! device nodes, ownership, trusted.* xattrs).
//!
//! - `suite_overlayfs::*`, `suite_native::*`: the shared snapshotter test suite
//!   (`kapsel_manager::snapshots::testsuite`), every case against both snapshotters.
//! - `unpack_*`: layers built in the test and the busybox fixture image unpacked into snapshots,
//!   checked through mounts as the kernel shows them; both snapshotters must give identical trees.
//!
//! Run: `cargo test -p kapsel-integration-tests --test snapshots`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kapsel_integration_tests::{require_root, Fixtures};
use kapsel_manager::content::{self, IngestStatus, ReadAt, Store};
use kapsel_manager::oci::{self, Compression, Descriptor, Digest, ImageConfig, Manifest, RootFs};
use kapsel_manager::snapshots::{
    testsuite, Labels, MountGuard, NativeSnapshotter, OverlaySnapshotter, Snapshotter,
};
use kapsel_manager::unpack::tartest::{Meta, TarWriter};
use kapsel_manager::unpack::{self, UnpackEvent};
use sha2::{Digest as _, Sha256};

fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ksnap-{tag}-"))
        .tempdir()
        .expect("create a scratch directory")
}

fn open_overlay(root: &Path) -> kapsel_manager::snapshots::Result<Box<dyn Snapshotter>> {
    Ok(Box::new(OverlaySnapshotter::open(root)?))
}

fn open_native(root: &Path) -> kapsel_manager::snapshots::Result<Box<dyn Snapshotter>> {
    Ok(Box::new(NativeSnapshotter::open(root)?))
}

fn run_case(name: &str, open: &testsuite::Opener) {
    require_root();
    let case = testsuite::CASES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no suite case {name}"))
        .1;
    let dir = scratch(name);
    case(open, dir.path());
}

macro_rules! suite {
    ($module:ident, $open:path, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::run_case(stringify!($case), &$open);
                }
            )*

            #[test]
            fn every_case_of_the_suite_is_run() {
                let here = [$(stringify!($case)),*];
                for (name, _) in kapsel_manager::snapshots::testsuite::CASES {
                    assert!(here.contains(name), "suite case {name} is not run here");
                }
            }
        }
    };
}

macro_rules! all_cases {
    ($module:ident, $open:path) => {
        suite!(
            $module,
            $open,
            [
                prepare_commit_view_chain,
                file_visible_in_child,
                deletion_is_absent_in_child,
                remove_with_children_refused,
                usage_counts_bytes_and_inodes,
                walk_lists_every_snapshot,
                commit_of_view_refused,
                names_are_unique,
                parent_must_be_committed,
                view_is_read_only,
                labels_are_kept,
                reopen_keeps_snapshots_and_cleans_leftovers,
                second_open_of_a_root_refused,
                chain_of_128_layers,
            ]
        );
    };
}

all_cases!(suite_overlayfs, super::open_overlay);
all_cases!(suite_native, super::open_native);

// ---------------------------------------------------------------------------------------------
// Unpacking.

/// A read-only content store over a directory of blobs named by hex digest (an OCI layout's
/// `blobs/sha256`), standing in for the content store in these tests.
struct DirStore(PathBuf);

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
    fn path(&self, d: &Digest) -> PathBuf {
        self.0.join(d.hex())
    }
    fn put(&self, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        fs::write(self.path(&d), data).unwrap();
        d
    }
}

impl Store for DirStore {
    fn info(&self, digest: &Digest) -> content::Result<content::Info> {
        let md = fs::metadata(self.path(digest))
            .map_err(|_| content::Error::NotFound(digest.clone()))?;
        Ok(content::Info {
            digest: digest.clone(),
            size: md.len(),
            created_at: 0,
            labels: BTreeMap::new(),
        })
    }
    fn reader(&self, digest: &Digest) -> content::Result<Box<dyn ReadAt>> {
        let f = fs::File::open(self.path(digest))
            .map_err(|_| content::Error::NotFound(digest.clone()))?;
        let n = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Box::new(FileReader(f, n)))
    }
    fn writer(
        &self,
        reference: &str,
        _: Option<(&Digest, u64)>,
    ) -> content::Result<Box<dyn content::Writer>> {
        Err(content::Error::InvalidReference(format!(
            "{reference}: the test store is read-only"
        )))
    }
    fn set_labels(
        &self,
        digest: &Digest,
        _: BTreeMap<String, String>,
    ) -> content::Result<content::Info> {
        self.info(digest)
    }
    fn delete(&self, _: &Digest) -> content::Result<()> {
        Ok(())
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Stores the layers (compressed as their media type says) and builds manifest and config.
fn image(store: &DirStore, layers: &[(&str, Vec<u8>)]) -> (Manifest, ImageConfig) {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (media_type, tar) in layers {
        diff_ids.push(Digest::of(tar));
        let blob = match Compression::of_layer(media_type).unwrap() {
            Compression::None => tar.clone(),
            Compression::Gzip => gzip(tar),
            Compression::Zstd => zstd::stream::encode_all(&tar[..], 3).unwrap(),
        };
        descs.push(Descriptor {
            media_type: media_type.to_string(),
            digest: store.put(&blob),
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

fn lget(path: &Path, key: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid strings and a buffer of the given length.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn llist(path: &Path) -> Vec<String> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and a buffer of the given length.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut v: Vec<String> = buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    v.sort();
    v
}

/// A description of every entry of a tree (type, mode, owner, size, content hash or link
/// target, device, mtime, xattrs) to compare unpacked trees.
fn tree(root: &Path, with_dir_mtimes: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("link->{}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            let h = Sha256::digest(fs::read(&p).unwrap());
            format!("file {} {:x}", md.len(), h)
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {:o} {}", md.mode() & libc::S_IFMT, md.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "other".to_string()
        };
        let mtime = if ft.is_dir() && !with_dir_mtimes {
            String::new()
        } else {
            md.mtime().to_string()
        };
        if rel.is_empty() {
            continue;
        }
        out.insert(
            rel,
            format!(
                "{what} mode={:o} owner={}:{} mtime={mtime} xattrs={:?}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                llist(&p)
            ),
        );
    }
    out
}

fn m(mode: u32) -> Meta {
    Meta::mode(mode)
}

/// Three layers exercising whiteouts, opaque directories, devices, owners, xattrs and hard links.
fn test_layers() -> Vec<Vec<u8>> {
    let cap = capability_xattr();
    let mut l0 = TarWriter::new();
    l0.dir("etc", m(0o755).mtime(1100))
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", m(0o644))
        .file("etc/gone", b"deleted by layer 1", m(0o644))
        .dir("opaque", m(0o755))
        .file("opaque/old1", b"hidden by layer 1", m(0o644))
        .dir("opaque/olddir", m(0o755))
        .file("opaque/olddir/x", b"hidden", m(0o644))
        .dir("dev", m(0o755))
        .char_dev("dev/null", 1, 3, m(0o666))
        .block_dev("dev/loop-test", 7, 0, m(0o660).owner(0, 6))
        .fifo("dev/fifo", m(0o620))
        .dir("home", m(0o755))
        .dir("home/user", m(0o700).owner(1000, 1000).mtime(1200))
        .file(
            "home/user/.profile",
            b"export A=1\n",
            m(0o600).owner(1000, 1000),
        )
        .file(
            "home/user/suid",
            b"#!/bin/sh\n",
            m(0o4755).owner(1000, 1000),
        )
        .file(
            "bin-ping",
            b"\x7fELF",
            m(0o755).xattr("security.capability", &cap),
        )
        .file(
            "xattr-file",
            b"x",
            m(0o644).xattr("user.kapsel.test", b"value"),
        )
        .dir("sticky", m(0o1777))
        .symlink("etc/link", "passwd")
        .file("big-hardlinked", b"shared inode", m(0o644))
        .dir("recreated", m(0o755))
        .file("recreated/old", b"deleted with its directory", m(0o644));
    let mut l1 = TarWriter::new();
    l1.dir("etc", m(0o755).mtime(2100))
        .whiteout("etc", "gone")
        .file("etc/new", b"layer 1", m(0o644))
        .dir("opaque", m(0o755).mtime(2200))
        .opaque("opaque")
        .file("opaque/fresh", b"only this", m(0o644))
        .hardlink("hl-of-lower", "big-hardlinked")
        .whiteout("", "sticky")
        .whiteout("", "recreated")
        .dir("recreated", m(0o750))
        .file("recreated/new", b"n", m(0o644));
    let mut l2 = TarWriter::new();
    l2.file("etc/passwd", b"root:x:0:0::/root:/bin/ash\n", m(0o644))
        .dir("sticky", m(0o1777).mtime(3000))
        .symlink("dev/fifo", "/dev/null");
    vec![l0.finish(), l1.finish(), l2.finish()]
}

/// A VFS_CAP_REVISION_2 `security.capability` value granting cap_net_bind_service (bit 10).
fn capability_xattr() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // revision 2, effective
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted[1]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[1]
    v
}

/// Unpacks the test image into `sn` and returns a mounted view of its top layer.
fn unpack_test_image(sn: &dyn Snapshotter, dir: &Path, media: [&str; 3]) -> (String, MountGuard) {
    let blobs = dir.join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    let store = DirStore(blobs);
    let layers = test_layers();
    let (manifest, config) = image(
        &store,
        &[
            (media[0], layers[0].clone()),
            (media[1], layers[1].clone()),
            (media[2], layers[2].clone()),
        ],
    );
    let top = unpack::unpack_image(&store, sn, &manifest, &config, &mut |_| {}).unwrap();
    let mounts = sn.view("check", Some(&top), Labels::new()).unwrap();
    let at = dir.join("view");
    fs::create_dir_all(&at).unwrap();
    (top, MountGuard::mount(&mounts, &at).unwrap())
}

fn check_test_image(root: &Path) {
    assert_eq!(
        fs::read(root.join("etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/ash\n"
    );
    assert_eq!(
        fs::read(root.join("etc/link")).unwrap(),
        b"root:x:0:0::/root:/bin/ash\n"
    );
    assert_eq!(fs::read(root.join("etc/new")).unwrap(), b"layer 1");
    assert!(
        fs::symlink_metadata(root.join("etc/gone")).is_err(),
        "whiteout: etc/gone absent"
    );
    let mut opaque: Vec<String> = fs::read_dir(root.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    opaque.sort();
    assert_eq!(
        opaque,
        vec!["fresh"],
        "an opaque directory hides the lower contents"
    );
    let recreated: Vec<String> = fs::read_dir(root.join("recreated"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        recreated,
        vec!["new"],
        "deleted and recreated: only the new contents"
    );
    // Devices.
    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (libc::makedev(1, 3), 0o666)
    );
    let lp = fs::symlink_metadata(root.join("dev/loop-test")).unwrap();
    assert!(lp.file_type().is_block_device());
    assert_eq!((lp.rdev(), lp.gid()), (libc::makedev(7, 0), 6));
    assert_eq!(
        fs::read_link(root.join("dev/fifo")).unwrap(),
        Path::new("/dev/null"),
        "a fifo replaced by a symlink in a later layer"
    );
    // Owners and modes, setuid kept after chown.
    let home = fs::symlink_metadata(root.join("home/user")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 1000, 0o700)
    );
    assert_eq!(home.mtime(), 1200);
    let suid = fs::symlink_metadata(root.join("home/user/suid")).unwrap();
    assert_eq!((suid.uid(), suid.mode() & 0o7777), (1000, 0o4755));
    // xattrs: file capabilities and user.*.
    assert_eq!(
        lget(&root.join("bin-ping"), "security.capability"),
        Some(capability_xattr())
    );
    assert_eq!(
        lget(&root.join("xattr-file"), "user.kapsel.test"),
        Some(b"value".to_vec())
    );
    // A hard link whose target is in a lower layer.
    let a = fs::symlink_metadata(root.join("big-hardlinked")).unwrap();
    let b = fs::symlink_metadata(root.join("hl-of-lower")).unwrap();
    assert_eq!(fs::read(root.join("hl-of-lower")).unwrap(), b"shared inode");
    assert_eq!(a.ino(), b.ino(), "one inode for both names");
    assert_eq!(a.nlink(), 2);
    // Deleted in layer 1, recreated in layer 2: present, without the old contents.
    let st = fs::symlink_metadata(root.join("sticky")).unwrap();
    assert_eq!((st.mode() & 0o7777, st.mtime()), (0o1777, 3000));
    // Directory times are those of the last layer declaring them.
    assert_eq!(
        fs::symlink_metadata(root.join("etc")).unwrap().mtime(),
        2100
    );
    assert_eq!(
        fs::symlink_metadata(root.join("opaque")).unwrap().mtime(),
        2200
    );
}

#[test]
fn unpack_overlay_layers_as_the_kernel_sees_them() {
    require_root();
    let dir = scratch("unpack-overlay");
    let sn = OverlaySnapshotter::open(&dir.path().join("sn")).unwrap();
    let (top, view) = unpack_test_image(
        &sn,
        dir.path(),
        [
            oci::MEDIA_OCI_LAYER_GZIP,
            oci::MEDIA_OCI_LAYER_ZSTD,
            oci::MEDIA_OCI_LAYER,
        ],
    );
    check_test_image(view.target());
    // In layer 1's own directory, overlayfs's native forms.
    let chains = sn.walk().unwrap();
    let l1 = &chains[1];
    assert_eq!(l1.kind, kapsel_manager::snapshots::Kind::Committed);
    let l1_mounts = sn.mounts(&l1.name).unwrap();
    let lower = l1_mounts[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .expect("a two-layer committed snapshot mounts as an overlay");
    let upper1 = PathBuf::from(lower.split(':').next().unwrap());
    let wh = fs::symlink_metadata(upper1.join("etc/gone")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is char 0:0"
    );
    assert_eq!(
        lget(&upper1.join("opaque"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert!(sn.stat(&top).is_ok());
    drop(view);
}

#[test]
fn unpack_native_and_overlay_give_identical_trees() {
    require_root();
    let dir = scratch("unpack-same");
    let ov = OverlaySnapshotter::open(&dir.path().join("ov")).unwrap();
    let na = NativeSnapshotter::open(&dir.path().join("na")).unwrap();
    let media = [
        oci::MEDIA_OCI_LAYER,
        oci::MEDIA_OCI_LAYER_GZIP,
        oci::MEDIA_OCI_LAYER_ZSTD,
    ];
    let (t1, v1) = unpack_test_image(&ov, &dir.path().join("a"), media);
    let (t2, v2) = unpack_test_image(&na, &dir.path().join("b"), media);
    assert_eq!(t1, t2, "same chain id");
    check_test_image(v2.target());
    let a = tree(v1.target(), true);
    let b = tree(v2.target(), true);
    for (k, va) in &a {
        assert_eq!(Some(va), b.get(k), "{k}: overlay vs native");
    }
    assert_eq!(
        a.len(),
        b.len(),
        "native has entries overlay has not: {:?}",
        { b.keys().filter(|k| !a.contains_key(*k)).collect::<Vec<_>>() }
    );
}

#[test]
fn unpack_through_an_overlay_mount_uses_kernel_whiteouts() {
    require_root();
    let dir = scratch("unpack-mounted");
    let sn = OverlaySnapshotter::open(&dir.path().join("sn")).unwrap();
    let layers = test_layers();
    let mut parent: Option<String> = None;
    for (i, l) in layers.iter().enumerate() {
        let key = format!("mounted-{i}");
        let mounts = sn.prepare(&key, parent.as_deref(), Labels::new()).unwrap();
        // The generic path: mount, apply with deletions through the mount.
        let st = unpack::apply_mounted(&mounts, &l[..]).unwrap();
        assert_eq!(st.diff_id, Digest::of(l));
        let name = format!("layer-{i}");
        sn.commit(&name, &key, Labels::new()).unwrap();
        parent = Some(name);
    }
    let mounts = sn.view("v", parent.as_deref(), Labels::new()).unwrap();
    let at = dir.path().join("v");
    fs::create_dir_all(&at).unwrap();
    let g = MountGuard::mount(&mounts, &at).unwrap();
    check_test_image(&at);
    drop(g);
}

#[test]
fn unpack_busybox_fixture_matches_its_rootfs() {
    require_root();
    let fx = Fixtures::get();
    let layout = fx.dir().join("busybox-oci");
    let store = DirStore(layout.join("blobs/sha256"));
    let index: oci::Index =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Manifest =
        serde_json::from_slice(&store.read_all(&index.manifests[0].digest).unwrap()).unwrap();
    let config: ImageConfig =
        serde_json::from_slice(&store.read_all(&manifest.config.digest).unwrap()).unwrap();
    let expected = tree(&fx.rootfs(), true);
    type Open = fn(&Path) -> kapsel_manager::snapshots::Result<Box<dyn Snapshotter>>;
    for (driver, open) in [
        ("overlayfs", open_overlay as Open),
        ("native", open_native as Open),
    ] {
        let dir = scratch(&format!("busybox-{driver}"));
        let sn = open(&dir.path().join("sn")).unwrap();
        let mut events = Vec::new();
        let started = Instant::now();
        let top = unpack::unpack_image(&store, &*sn, &manifest, &config, &mut |e| events.push(e))
            .unwrap();
        let took = started.elapsed();
        assert_eq!(
            top,
            config.rootfs.diff_ids[0].to_string(),
            "one layer: chain id = diff_id"
        );
        let size = events
            .iter()
            .find_map(|e| match e {
                UnpackEvent::LayerDone { stats, .. } => Some(stats.size),
                _ => None,
            })
            .unwrap();
        eprintln!(
            "busybox on {driver}: {} KiB compressed, {} KiB tar, unpacked in {:?} ({:.0} MB/s of tar)",
            manifest.layers[0].size / 1024,
            size / 1024,
            took,
            size as f64 / took.as_secs_f64() / 1e6
        );
        let mounts = sn.view("v", Some(&top), Labels::new()).unwrap();
        let at = dir.path().join("v");
        fs::create_dir_all(&at).unwrap();
        let g = MountGuard::mount(&mounts, &at).unwrap();
        let got = tree(&at, true);
        for (k, v) in &expected {
            assert_eq!(Some(v), got.get(k), "{driver}: {k}");
        }
        assert_eq!(got.len(), expected.len(), "{driver}: entry count");
        drop(g);
    }
}

/// A generated layer of ~`total` bytes: many small and medium files (text-like, compressible)
/// plus a few large ones.
fn generated_layer(total: usize) -> Vec<u8> {
    let mut w = TarWriter::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words: Vec<String> = (0..512).map(|i| format!("word{i:03x} ")).collect();
    let mut written = 0;
    let mut n = 0;
    w.dir("usr", Meta::mode(0o755));
    while written < total {
        let dir = format!("usr/d{:03}", n / 100);
        if n % 100 == 0 {
            w.dir(&dir, Meta::mode(0o755));
        }
        let size = match n % 50 {
            0 => 4 << 20,
            1..=9 => 256 << 10,
            _ => 8 << 10,
        };
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            if next() % 4 == 0 {
                data.extend_from_slice(&next().to_le_bytes());
            } else {
                data.extend_from_slice(words[(next() % 512) as usize].as_bytes());
            }
        }
        data.truncate(size);
        w.file(&format!("{dir}/f{n}"), &data, Meta::mode(0o644));
        written += size;
        n += 1;
    }
    w.finish()
}

#[test]
fn unpack_speed_of_a_generated_layer() {
    require_root();
    let dir = scratch("speed");
    let blobs = dir.path().join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    let store = DirStore(blobs);
    let tar = generated_layer(256 << 20);
    let media_types = [
        oci::MEDIA_OCI_LAYER,
        oci::MEDIA_OCI_LAYER_GZIP,
        oci::MEDIA_OCI_LAYER_ZSTD,
    ];
    for (i, media) in media_types.into_iter().enumerate() {
        let (manifest, config) = image(&store, &[(media, tar.clone())]);
        let sn = OverlaySnapshotter::open(&dir.path().join(format!("sn-{i}"))).unwrap();
        let mut applied = false;
        let started = Instant::now();
        let top = unpack::unpack_image(&store, &sn, &manifest, &config, &mut |e| {
            applied |= matches!(e, UnpackEvent::LayerDone { .. })
        })
        .unwrap();
        let took = started.elapsed();
        assert!(applied, "{media}: the layer was unpacked, not skipped");
        assert_eq!(top, Digest::of(&tar).to_string());
        eprintln!(
            "generated layer {} MiB tar, {} MiB blob ({media}): {:?}, {:.0} MB/s of tar",
            tar.len() >> 20,
            manifest.layers[0].size >> 20,
            took,
            tar.len() as f64 / took.as_secs_f64() / 1e6
        );
    }
}
