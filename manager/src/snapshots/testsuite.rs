//! The test suite every snapshotter must pass (containerd's `core/snapshots/testsuite` idea).
//!
//! Each case takes a function opening the snapshotter under test at a root directory, and a
//! scratch directory of its own; it panics on failure. The cases mount, so they need root: the
//! integration tests (`integration-tests/tests/snapshots.rs`) run every case against every
//! snapshotter, one `#[test]` each, through [`CASES`].

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Error, Kind, Labels, MountGuard, Snapshotter};

/// Opens the snapshotter under test at a root directory.
pub type Opener = dyn Fn(&Path) -> super::Result<Box<dyn Snapshotter>>;
/// One case of the suite.
pub type Case = fn(&Opener, &Path);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("prepare_commit_view_chain", prepare_commit_view_chain),
    ("file_visible_in_child", file_visible_in_child),
    ("deletion_is_absent_in_child", deletion_is_absent_in_child),
    ("remove_with_children_refused", remove_with_children_refused),
    (
        "usage_counts_bytes_and_inodes",
        usage_counts_bytes_and_inodes,
    ),
    ("walk_lists_every_snapshot", walk_lists_every_snapshot),
    ("commit_of_view_refused", commit_of_view_refused),
    ("names_are_unique", names_are_unique),
    ("parent_must_be_committed", parent_must_be_committed),
    ("view_is_read_only", view_is_read_only),
    ("labels_are_kept", labels_are_kept),
    (
        "reopen_keeps_snapshots_and_cleans_leftovers",
        reopen_keeps_snapshots_and_cleans_leftovers,
    ),
    (
        "second_open_of_a_root_refused",
        second_open_of_a_root_refused,
    ),
    ("chain_of_128_layers", chain_of_128_layers),
];

fn none() -> Labels {
    Labels::new()
}

fn mnt(scratch: &Path, name: &str) -> PathBuf {
    let p = scratch.join(name);
    fs::create_dir_all(&p).expect("create a mount point");
    p
}

/// Prepares `key` on `parent`, lets `f` change the tree through a mount, commits as `name`.
fn layer(
    sn: &dyn Snapshotter,
    scratch: &Path,
    name: &str,
    parent: Option<&str>,
    f: impl FnOnce(&Path),
) {
    let key = format!("{name}-active");
    let mounts = sn.prepare(&key, parent, none()).expect("prepare");
    let at = mnt(scratch, &format!("m-{name}"));
    let g = MountGuard::mount(&mounts, &at).expect("mount an active snapshot");
    f(&at);
    g.unmount().expect("unmount");
    sn.commit(name, &key, none()).expect("commit");
}

/// Mounts a view of `parent` and hands its path to `f`.
fn with_view(sn: &dyn Snapshotter, scratch: &Path, key: &str, parent: &str, f: impl FnOnce(&Path)) {
    let mounts = sn.view(key, Some(parent), none()).expect("view");
    let at = mnt(scratch, &format!("v-{key}"));
    let g = MountGuard::mount(&mounts, &at).expect("mount a view");
    f(&at);
    g.unmount().expect("unmount a view");
}

pub fn prepare_commit_view_chain(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    layer(&*sn, scratch, "base", None, |p| {
        fs::write(p.join("a"), b"base a").unwrap();
        fs::create_dir(p.join("d")).unwrap();
    });
    layer(&*sn, scratch, "mid", Some("base"), |p| {
        fs::write(p.join("d/b"), b"mid b").unwrap();
        fs::write(p.join("a"), b"mid a").unwrap();
    });
    layer(&*sn, scratch, "top", Some("mid"), |p| {
        fs::write(p.join("c"), b"top c").unwrap();
    });
    let base = sn.stat("base").unwrap();
    assert_eq!((base.kind, base.parent.as_deref()), (Kind::Committed, None));
    let top = sn.stat("top").unwrap();
    assert_eq!(
        (top.kind, top.parent.as_deref()),
        (Kind::Committed, Some("mid"))
    );
    assert!(
        matches!(sn.stat("top-active"), Err(Error::NotFound(_))),
        "a committed key goes away"
    );
    with_view(&*sn, scratch, "v", "top", |p| {
        assert_eq!(fs::read(p.join("a")).unwrap(), b"mid a");
        assert_eq!(fs::read(p.join("d/b")).unwrap(), b"mid b");
        assert_eq!(fs::read(p.join("c")).unwrap(), b"top c");
    });
    let v = sn.stat("v").unwrap();
    assert_eq!((v.kind, v.parent.as_deref()), (Kind::View, Some("top")));
    // A view of the bottom layer alone shows only it.
    with_view(&*sn, scratch, "v0", "base", |p| {
        assert_eq!(fs::read(p.join("a")).unwrap(), b"base a");
        assert!(!p.join("c").exists());
    });
    // The mounts of an existing snapshot are the ones it was made with.
    assert_eq!(sn.mounts("v").unwrap(), sn.mounts("v").unwrap());
    assert!(!sn.mounts("v").unwrap().is_empty());
}

pub fn file_visible_in_child(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    layer(&*sn, scratch, "p", None, |p| {
        fs::create_dir_all(p.join("etc/deep")).unwrap();
        fs::write(p.join("etc/deep/file"), b"from parent").unwrap();
        std::os::unix::fs::symlink("deep/file", p.join("etc/link")).unwrap();
    });
    let mounts = sn.prepare("child", Some("p"), none()).unwrap();
    let at = mnt(scratch, "child");
    let g = MountGuard::mount(&mounts, &at).unwrap();
    assert_eq!(fs::read(at.join("etc/deep/file")).unwrap(), b"from parent");
    assert_eq!(fs::read(at.join("etc/link")).unwrap(), b"from parent");
    // Writing in the child leaves the parent unchanged.
    fs::write(at.join("etc/deep/file"), b"changed").unwrap();
    g.unmount().unwrap();
    with_view(&*sn, scratch, "pv", "p", |p| {
        assert_eq!(fs::read(p.join("etc/deep/file")).unwrap(), b"from parent");
    });
}

pub fn deletion_is_absent_in_child(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    layer(&*sn, scratch, "p", None, |p| {
        fs::write(p.join("gone"), b"x").unwrap();
        fs::create_dir_all(p.join("dir/sub")).unwrap();
        fs::write(p.join("dir/sub/f"), b"x").unwrap();
        fs::write(p.join("kept"), b"x").unwrap();
    });
    layer(&*sn, scratch, "c", Some("p"), |p| {
        fs::remove_file(p.join("gone")).unwrap();
        fs::remove_dir_all(p.join("dir")).unwrap();
    });
    with_view(&*sn, scratch, "cv", "c", |p| {
        for gone in ["gone", "dir"] {
            let e = fs::symlink_metadata(p.join(gone)).expect_err(gone);
            assert_eq!(e.kind(), ErrorKind::NotFound, "{gone} must be absent");
        }
        assert!(p.join("kept").exists());
        let names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["kept".to_string()],
            "a deletion must not show up as an entry"
        );
    });
}

pub fn remove_with_children_refused(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    layer(&*sn, scratch, "p", None, |p| {
        fs::write(p.join("f"), b"x").unwrap()
    });
    sn.prepare("child", Some("p"), none()).unwrap();
    match sn.remove("p") {
        Err(Error::HasChildren { key, children }) => {
            assert_eq!(key, "p");
            assert_eq!(children, vec!["child".to_string()]);
        }
        other => panic!("removing a parent must be refused, got {other:?}"),
    }
    let msg = sn.remove("p").unwrap_err().to_string();
    assert!(
        msg.contains("child") && msg.contains("remove them first"),
        "{msg}"
    );
    sn.stat("p").expect("a refused removal leaves the snapshot");
    sn.remove("child").unwrap();
    sn.remove("p").unwrap();
    assert!(matches!(sn.stat("p"), Err(Error::NotFound(_))));
    assert!(matches!(sn.remove("p"), Err(Error::NotFound(_))));
    // Nothing of the removed snapshots is left on disk.
    let left: Vec<_> = fs::read_dir(sn.root().join("snapshots")).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

pub fn usage_counts_bytes_and_inodes(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    layer(&*sn, scratch, "p", None, |p| {
        fs::write(p.join("small"), b"x").unwrap();
    });
    let mounts = sn.prepare("a", Some("p"), none()).unwrap();
    let at = mnt(scratch, "a");
    let g = MountGuard::mount(&mounts, &at).unwrap();
    fs::write(at.join("big"), vec![7u8; 1 << 20]).unwrap();
    fs::create_dir(at.join("d")).unwrap();
    for i in 0..10 {
        fs::write(at.join(format!("d/{i}")), b"y").unwrap();
    }
    fs::hard_link(at.join("big"), at.join("big2")).unwrap();
    g.unmount().unwrap();
    let u = sn.usage("a").unwrap();
    assert!(
        u.size >= 1 << 20,
        "1 MiB written, usage says {} bytes",
        u.size
    );
    assert!(
        u.size < 2 << 20,
        "a hard link must not count twice: {} bytes",
        u.size
    );
    // root dir + big (+ its link, once) + d + 10 files, plus what the parent copy holds.
    assert!(u.inodes >= 13, "inodes {}", u.inodes);
    sn.commit("c", "a", none()).unwrap();
    assert_eq!(sn.usage("c").unwrap(), u, "usage is kept at commit");
    let pu = sn.usage("p").unwrap();
    assert!(pu.inodes >= 2 && pu.size < 1 << 20, "parent usage {pu:?}");
}

pub fn walk_lists_every_snapshot(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    assert!(sn.walk().unwrap().is_empty());
    layer(&*sn, scratch, "p", None, |_| {});
    sn.prepare("act", Some("p"), none()).unwrap();
    sn.view("vw", Some("p"), none()).unwrap();
    let all = sn.walk().unwrap();
    let got: Vec<(String, Kind, Option<String>)> = all
        .into_iter()
        .map(|i| (i.name, i.kind, i.parent))
        .collect();
    assert_eq!(
        got,
        vec![
            ("p".to_string(), Kind::Committed, None),
            ("act".to_string(), Kind::Active, Some("p".to_string())),
            ("vw".to_string(), Kind::View, Some("p".to_string())),
        ]
    );
}

pub fn commit_of_view_refused(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    layer(&*sn, scratch, "p", None, |_| {});
    sn.view("v", Some("p"), none()).unwrap();
    assert!(matches!(
        sn.commit("c", "v", none()),
        Err(Error::NotActive {
            kind: Kind::View,
            ..
        })
    ));
    assert!(matches!(
        sn.commit("c2", "p", none()),
        Err(Error::NotActive {
            kind: Kind::Committed,
            ..
        })
    ));
    assert!(matches!(sn.stat("c"), Err(Error::NotFound(_))));
    assert_eq!(sn.stat("v").unwrap().kind, Kind::View);
}

pub fn names_are_unique(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    sn.prepare("k", None, none()).unwrap();
    assert!(matches!(
        sn.prepare("k", None, none()),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        sn.view("k", None, none()),
        Err(Error::AlreadyExists(_))
    ));
    sn.prepare("k2", None, none()).unwrap();
    sn.commit("c", "k", none()).unwrap();
    assert!(matches!(
        sn.commit("c", "k2", none()),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        sn.prepare("c", None, none()),
        Err(Error::AlreadyExists(_))
    ));
    // The key of a committed snapshot is free again.
    sn.prepare("k", None, none()).unwrap();
    assert!(matches!(
        sn.prepare("", None, none()),
        Err(Error::InvalidKey(_))
    ));
}

pub fn parent_must_be_committed(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    sn.prepare("a", None, none()).unwrap();
    assert!(matches!(
        sn.prepare("b", Some("a"), none()),
        Err(Error::ParentNotCommitted {
            kind: Kind::Active,
            ..
        })
    ));
    assert!(matches!(
        sn.view("b", Some("nope"), none()),
        Err(Error::NotFound(_))
    ));
    assert!(
        matches!(sn.stat("b"), Err(Error::NotFound(_))),
        "a failed prepare leaves nothing"
    );
}

pub fn view_is_read_only(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    layer(&*sn, scratch, "p", None, |p| {
        fs::write(p.join("f"), b"x").unwrap()
    });
    layer(&*sn, scratch, "q", Some("p"), |p| {
        fs::write(p.join("g"), b"y").unwrap()
    });
    for (key, parent) in [("v1", "p"), ("v2", "q")] {
        with_view(&*sn, scratch, key, parent, |p| {
            let e = fs::write(p.join("new"), b"z").expect_err("a view must be read-only");
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{key}: {e}");
        });
    }
}

pub fn labels_are_kept(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    let l = Labels::from([("containerd.io/gc.root".to_string(), "x".to_string())]);
    sn.prepare("a", None, l.clone()).unwrap();
    assert_eq!(sn.stat("a").unwrap().labels, l);
    let l2 = Labels::from([("k".to_string(), "v".to_string())]);
    sn.commit("c", "a", l2.clone()).unwrap();
    assert_eq!(sn.stat("c").unwrap().labels, l2);
    let info = sn.update_labels("c", Labels::new()).unwrap();
    assert!(info.labels.is_empty());
    drop(sn);
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    assert!(
        sn.stat("c").unwrap().labels.is_empty(),
        "label updates are persisted"
    );
}

pub fn reopen_keeps_snapshots_and_cleans_leftovers(open: &Opener, scratch: &Path) {
    let root = scratch.join("root");
    let created = {
        let sn = open(&root).expect("open the snapshotter");
        layer(&*sn, scratch, "p", None, |p| {
            fs::write(p.join("f"), b"kept").unwrap()
        });
        sn.prepare("a", Some("p"), none()).unwrap();
        sn.stat("p").unwrap().created
    };
    // What a crash in the middle of a create or a remove leaves.
    fs::create_dir_all(root.join("snapshots/new-77/fs")).unwrap();
    fs::create_dir_all(root.join("snapshots/trash-78/fs/x")).unwrap();
    let sn = open(&root).expect("open the snapshotter");
    assert!(!root.join("snapshots/new-77").exists());
    assert!(!root.join("snapshots/trash-78").exists());
    let p = sn.stat("p").unwrap();
    assert_eq!((p.kind, p.created), (Kind::Committed, created));
    assert_eq!(sn.stat("a").unwrap().parent.as_deref(), Some("p"));
    with_view(&*sn, scratch, "v", "p", |m| {
        assert_eq!(fs::read(m.join("f")).unwrap(), b"kept");
    });
    // Ids are not reused: a new snapshot gets a fresh directory.
    sn.prepare("b", None, none()).unwrap();
    assert_eq!(sn.walk().unwrap().len(), 4);
}

pub fn second_open_of_a_root_refused(open: &Opener, scratch: &Path) {
    let root = scratch.join("root");
    let sn = open(&root).expect("open the snapshotter");
    match open(&root) {
        Err(Error::Locked { root: r }) => assert_eq!(r, root),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a root in use must not open twice"),
    }
    drop(sn);
    open(&root).expect("the root opens again once released");
}

pub fn chain_of_128_layers(open: &Opener, scratch: &Path) {
    let sn = open(&scratch.join("root")).expect("open the snapshotter");
    let mut parent: Option<String> = None;
    for i in 0..128 {
        let name = format!("layer-{i:03}-with-a-long-name-to-make-paths-longer");
        let key = format!("{name}-active");
        let mounts = sn.prepare(&key, parent.as_deref(), none()).unwrap();
        let at = mnt(scratch, "deep");
        let g = MountGuard::mount(&mounts, &at).unwrap();
        if i > 0 {
            assert!(at.join(format!("f{:03}", i - 1)).exists(), "layer {i}");
        }
        fs::write(at.join(format!("f{i:03}")), i.to_string()).unwrap();
        g.unmount().unwrap();
        sn.commit(&name, &key, none()).unwrap();
        parent = Some(name);
    }
    let top = parent.unwrap();
    let mounts = sn.view("deep-view", Some(&top), none()).unwrap();
    let opts: usize = mounts.iter().map(|m| m.options.join(",").len()).sum();
    if mounts.iter().any(|m| m.kind == "overlay") {
        assert!(
            opts > 4096,
            "the overlay options ({opts} bytes) must pass one page here"
        );
    }
    let at = mnt(scratch, "deep-view");
    let g = MountGuard::mount(&mounts, &at).unwrap();
    for i in 0..128 {
        assert_eq!(
            fs::read_to_string(at.join(format!("f{i:03}"))).unwrap(),
            i.to_string(),
            "layer {i} seen through the view (options {opts} bytes)"
        );
    }
    assert_eq!(fs::metadata(&at).unwrap().mode() & 0o777, 0o755);
    g.unmount().unwrap();
}
