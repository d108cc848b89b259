//! Images through kapseld and the `kapsel` CLI against the real peers (issue 4): archives
//! exchanged with Debian's dockerd, podman and containerd; a multi-layer image made here
//! (whiteouts, an opaque directory, hard links, symlinks, modes, owners, xattrs, a device node)
//! round-tripped through `docker-registry`, `kapsel save` and `kapsel load` with the same
//! digests and the same unpacked trees; and bad input — a registry failing a blob, a truncated
//! or corrupt archive, a full disk — each a clear error with nothing left half-written.
//!
//! Every daemon has a private root under `/tmp/kcli-*`; registries use ports 5211-5219.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kapsel_integration_tests::clients::{Containerd, Dockerd, Podman};
use kapsel_integration_tests::kapseld::{
    fixture_env, list, tar_layer, write_image, Daemon, Layer, Registry,
};
use kapsel_integration_tests::{require_program, unique, Cmd, Fixtures};
use sha2::{Digest as _, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/{}", unique(tag)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kapsel image inspect NAME` → (config digest, manifest digest, diff ids).
fn kinspect(d: &Daemon, name: &str) -> (String, String, Vec<String>) {
    let v = json(&d.ok(&["image", "inspect", name]).stdout);
    let v = &v[0];
    assert_eq!(v["Kapsel"]["Unpacked"], true, "{name} is not unpacked: {v}");
    let layers = v["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    (
        v["Id"].as_str().unwrap().to_string(),
        v["Kapsel"]["Manifest"]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        layers,
    )
}

/// Checks the store holds nothing after a failure on an empty store: no ingest, no image, no
/// blob (what was complete before the failure is collected with the failed job's lease), no
/// snapshot.
fn assert_store_clean(d: &Daemon) {
    let ingest = list(&d.root().join("content/ingest"));
    assert!(ingest.is_empty(), "ingests left: {ingest:?}");
    assert_eq!(d.ok(&["images", "-q"]).stdout, "", "an image is listed");
    assert_eq!(d.blobs(), Vec::<String>::new(), "blobs left");
    let snaps = d.root().join("snapshots");
    for driver in list(&snaps) {
        let left = list(&snaps.join(&driver).join("snapshots"));
        assert!(left.is_empty(), "{driver} snapshots left: {left:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Archives with dockerd, podman and containerd, through the CLI

#[test]
fn docker_save_loads_into_kapsel_and_kapsel_save_loads_into_docker_podman_and_containerd() {
    let f = Fixtures::get();
    let work = scratch("kcli-interop");
    let mut docker = Dockerd::start(Path::new("/usr/sbin/runc"), &f.docker_archive());
    // A second image in dockerd, offline: busybox plus a file, committed from a created container.
    let ctr = unique("kcli-c");
    std::fs::write(work.join("note.txt"), "from-docker-through-kapsel\n").unwrap();
    docker
        .docker(&["create", "--name", &ctr, "busybox:latest"])
        .ok();
    docker
        .docker(&[
            "cp",
            work.join("note.txt").to_str().unwrap(),
            &format!("{ctr}:/note.txt"),
        ])
        .ok();
    docker
        .docker(&[
            "commit",
            "--change",
            r#"CMD ["cat", "/note.txt"]"#,
            &ctr,
            "kcli/other:2",
        ])
        .ok();
    docker.docker(&["rm", &ctr]).ok();
    let docker_id = |name: &str| {
        docker
            .docker(&["image", "inspect", "--format", "{{.Id}}", name])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    let bb_id = docker_id("busybox:latest");
    let other_id = docker_id("kcli/other:2");
    assert_ne!(bb_id, other_id);
    assert_eq!(bb_id, fixture_env("CONFIG_DIGEST"));

    // docker save of both → kapsel load.
    let dsave = work.join("docker-save.tar");
    docker
        .docker(&[
            "save",
            "-o",
            dsave.to_str().unwrap(),
            "busybox:latest",
            "kcli/other:2",
        ])
        .ok();
    let d = Daemon::start("overlayfs");
    let out = d.ok(&["load", "-i", dsave.to_str().unwrap()]);
    let mut loaded: Vec<&str> = out.stdout.lines().collect();
    loaded.sort();
    assert_eq!(
        loaded,
        ["Loaded image: busybox:latest", "Loaded image: kcli/other:2"],
        "{out}"
    );
    let (k_bb, _, bb_layers) = kinspect(&d, "busybox:latest");
    let (k_other, _, other_layers) = kinspect(&d, "kcli/other:2");
    assert_eq!(k_bb, bb_id, "busybox keeps docker's image id");
    assert_eq!(k_other, other_id, "kcli/other:2 keeps docker's image id");
    assert_eq!(other_layers.len(), 2);
    assert_eq!(other_layers[0], bb_layers[0]);
    let docker_layers = docker
        .docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            "kcli/other:2",
        ])
        .ok()
        .stdout;
    assert_eq!(json(&docker_layers), serde_json::json!(other_layers));

    // kapsel save of three names (two images) → docker load into a dockerd without them.
    d.ok(&["tag", "kcli/other:2", "kcli/third:3"]);
    let ksave = work.join("kapsel-save.tar");
    d.ok(&[
        "save",
        "-o",
        ksave.to_str().unwrap(),
        "busybox",
        "kcli/other:2",
        "kcli/third:3",
    ]);
    docker
        .docker(&["rmi", "busybox:latest", "kcli/other:2"])
        .ok();
    assert_eq!(docker.docker(&["images", "-q"]).ok().stdout.trim(), "");
    let out = docker.docker(&["load", "-i", ksave.to_str().unwrap()]).ok();
    for name in ["busybox:latest", "kcli/other:2", "kcli/third:3"] {
        assert!(
            out.stdout.contains(&format!("Loaded image: {name}")),
            "{name}: {}",
            out.all_output()
        );
    }
    assert_eq!(docker_id("busybox:latest"), bb_id);
    assert_eq!(docker_id("kcli/other:2"), other_id);
    assert_eq!(docker_id("kcli/third:3"), other_id);
    let ran = docker
        .docker(&["run", "--rm", "--network", "none", "kcli/third:3"])
        .ok();
    assert_eq!(ran.stdout, "from-docker-through-kapsel\n", "{ran}");
    docker.stop();

    // podman loads the docker-archive (several images) and an OCI archive (podman 4.3 takes one
    // image per OCI archive).
    let kso = work.join("kapsel-save-oci.tar");
    d.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        kso.to_str().unwrap(),
        "kcli/other:2",
    ]);
    let podman = Podman::new(Path::new("/usr/bin/crun"), &f.oci_archive());
    podman.cmd(&["rmi", "-af"]).ok();
    let pid = |name: &str| {
        let id = podman
            .cmd(&["image", "inspect", "--format", "{{.Id}}", name])
            .ok()
            .stdout;
        format!("sha256:{}", id.trim())
    };
    let out = podman.cmd(&["load", "-i", ksave.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("kcli/third:3"), "{out}");
    assert_eq!(pid("docker.io/library/busybox:latest"), bb_id);
    assert_eq!(pid("docker.io/kcli/other:2"), other_id);
    assert_eq!(pid("docker.io/kcli/third:3"), other_id);
    podman.cmd(&["rmi", "-af"]).ok();
    let out = podman.cmd(&["load", "-i", kso.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("kcli/other:2"), "{out}");
    assert_eq!(pid("docker.io/kcli/other:2"), other_id);
    drop(podman);

    // containerd imports both formats; the OCI one keeps kapsel's manifest digests.
    let kso_all = work.join("kapsel-save-oci-all.tar");
    d.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        kso_all.to_str().unwrap(),
        "busybox",
        "kcli/other:2",
    ]);
    let (_, bb_manifest, _) = kinspect(&d, "busybox");
    let (_, other_manifest, _) = kinspect(&d, "kcli/other:2");
    let mut ctrd = Containerd::start();
    let config_in_ctr = |ctrd: &Containerd, name: &str| -> (String, String) {
        let ls = ctrd.ctr(&["image", "ls"]).ok().stdout;
        let line = ls
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("ctr has no {name}:\n{ls}"));
        let manifest = line
            .split_whitespace()
            .find(|c| c.starts_with("sha256:"))
            .unwrap()
            .to_string();
        let raw = ctrd.ctr(&["content", "get", &manifest]).ok().stdout;
        let config = json(&raw)["config"]["digest"].as_str().unwrap().to_string();
        (manifest, config)
    };
    for (archive, oci) in [(&ksave, false), (&kso_all, true)] {
        ctrd.ctr(&["image", "import", archive.to_str().unwrap()])
            .timeout(Duration::from_secs(120))
            .ok();
        let (m, c) = config_in_ctr(&ctrd, "docker.io/library/busybox:latest");
        assert_eq!(c, bb_id);
        if oci {
            assert_eq!(m, bb_manifest);
        }
        let (m, c) = config_in_ctr(&ctrd, "docker.io/kcli/other:2");
        assert_eq!(c, other_id);
        if oci {
            assert_eq!(m, other_manifest);
        }
        ctrd.ctr(&[
            "image",
            "rm",
            "docker.io/library/busybox:latest",
            "docker.io/kcli/other:2",
        ])
        .output();
        ctrd.ctr(&["image", "rm", "docker.io/kcli/third:3"])
            .output();
    }
    ctrd.stop();
    let _ = std::fs::remove_dir_all(&work);
}

// ---------------------------------------------------------------------------------------------
// 2. A multi-layer image made here, round-tripped through the registry, save and load

/// The fixture's busybox layer (gzip) copied into `layout`.
fn busybox_layer(layout: &Path) -> Layer {
    let digest = fixture_env("LAYER_DIGEST");
    let src = Fixtures::get()
        .dir()
        .join("busybox-oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let dst = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::copy(&src, &dst).unwrap();
    Layer {
        size: std::fs::metadata(&dst).unwrap().len(),
        digest,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        diff_id: fixture_env("DIFF_ID"),
    }
}

/// An OCI archive of `layout`.
fn oci_archive(layout: &Path, out: &Path) {
    Cmd::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(layout)
        .args(["oci-layout", "index.json", "blobs"])
        .timeout(Duration::from_secs(120))
        .ok();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: p and n are NUL-terminated and value is a valid buffer of its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The xattrs of `path` (not following a symlink), sorted.
fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: p is NUL-terminated; names is a writable buffer of the given length.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}", path.display());
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let c = std::ffi::CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: p and c are NUL-terminated; value is a writable buffer of its length.
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                c.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0, "getxattr {}", path.display());
        value.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    out
}

/// What the comparison of two unpacked trees looks at, for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// st_mode: file type and permission bits (setuid, setgid, sticky included).
    mode: u32,
    uid: u32,
    gid: u32,
    /// Regular files: size and sha256 of the content.
    size: u64,
    sha256: String,
    /// Symlinks: the target.
    link: String,
    /// Devices.
    rdev: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
    /// The first path (in name order) of the same inode, for a file with several links.
    same_as: Option<String>,
}

/// Every entry below `root` by relative path.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, Entry>,
        inodes: &mut BTreeMap<(u64, u64), String>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let mut e = Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: 0,
                sha256: String::new(),
                link: String::new(),
                rdev: 0,
                mtime: m.mtime(),
                xattrs: xattrs(&p),
                same_as: None,
            };
            if ft.is_file() {
                e.size = m.len();
                e.sha256 = digest_of(&std::fs::read(&p).unwrap());
                if m.nlink() > 1 {
                    let first = inodes
                        .entry((m.dev(), m.ino()))
                        .or_insert_with(|| rel.clone());
                    e.same_as = Some(first.clone());
                }
            } else if ft.is_symlink() {
                e.link = std::fs::read_link(&p).unwrap().display().to_string();
            } else if ft.is_char_device() || ft.is_block_device() {
                e.rdev = m.rdev();
            }
            out.insert(rel, e);
            if ft.is_dir() {
                walk(root, &p, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    assert!(!out.is_empty(), "{} is empty", root.display());
    out
}

/// The `fs` directory of the native snapshot named `chain` in `d`'s store.
fn native_snapshot(d: &Daemon, chain: &str) -> PathBuf {
    let dir = d.root().join("snapshots/native/snapshots");
    for id in list(&dir) {
        let Ok(meta) = std::fs::read_to_string(dir.join(&id).join("meta.json")) else {
            continue;
        };
        if json(&meta)["name"] == chain {
            return dir.join(id).join("fs");
        }
    }
    panic!("no native snapshot named {chain} in {}", dir.display());
}

/// The `fs` directories of the overlayfs snapshots of `name`'s layers, top first, joined with
/// `:` for a `lowerdir=` mount option.
fn overlay_lowerdirs(d: &Daemon, name: &str) -> String {
    let v = json(&d.ok(&["image", "inspect", name]).stdout);
    let dir = d.root().join("snapshots/overlayfs/snapshots");
    let mut by_name = BTreeMap::new();
    for id in list(&dir) {
        if let Ok(meta) = std::fs::read_to_string(dir.join(&id).join("meta.json")) {
            let m = json(&meta);
            by_name.insert(
                m["name"].as_str().unwrap().to_string(),
                (
                    dir.join(&id).join("fs"),
                    m["parent"].as_str().map(String::from),
                ),
            );
        }
    }
    let mut chain = v[0]["Kapsel"]["ChainID"].as_str().map(String::from);
    let mut dirs = Vec::new();
    while let Some(c) = chain {
        let (fs, parent) = by_name
            .get(&c)
            .unwrap_or_else(|| panic!("no overlayfs snapshot named {c}"));
        dirs.push(fs.display().to_string());
        chain = parent.clone();
    }
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    dirs.join(":")
}

fn unpacked_tree(d: &Daemon, name: &str) -> BTreeMap<String, Entry> {
    let v = json(&d.ok(&["image", "inspect", name]).stdout);
    let chain = v[0]["Kapsel"]["ChainID"].as_str().unwrap().to_string();
    tree(&native_snapshot(d, &chain))
}

/// Differences between two trees, one line each (empty when identical).
fn diff_trees(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only in the first: {k}")),
            Some(w) if w != v => out.push(format!("{k}: {v:?} != {w:?}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("only in the second: {k}"));
    }
    out
}

/// busybox (the fixture's gzip layer) and three layers made here: (manifest, config digest).
fn multi_layer_image(work: &Path, layout: &Path, name: &str) -> (String, String) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let mut layers = vec![busybox_layer(layout)];
    let scripts = [
        // 1: owners, modes, hard links, symlinks, a device node, a fifo, xattrs (below), mtimes.
        r#"set -e
mkdir -p etc/app/data usr/lib/k dev srv/tmp2 "srv/odd name é"
printf 'v1\n' > etc/app/conf; chmod 0640 etc/app/conf; chown 1000:1001 etc/app/conf
printf a > etc/app/data/a; printf b > etc/app/data/b; chown -R 33:33 etc/app/data; chmod 0750 etc/app/data
head -c 3000000 /dev/urandom > usr/lib/k/one; ln usr/lib/k/one usr/lib/k/two; ln usr/lib/k/one srv/three
ln -s one usr/lib/k/rel; ln -s /etc/passwd usr/lib/k/abs; ln -s /nowhere usr/lib/k/dangling
printf '#!/bin/sh\n' > usr/lib/k/suid; chmod 4755 usr/lib/k/suid
printf 'g\n' > usr/lib/k/sgid; chmod 2711 usr/lib/k/sgid
chmod 1777 srv/tmp2
mknod dev/kcli-null c 1 3
mkfifo srv/fifo
printf x > "srv/odd name é/f"
touch -d @1000000000 usr/lib/k/one
touch -h -d @1234567890 usr/lib/k/rel
"#,
        // 2: deletions: files, a symlink, one of two hard links, a busybox applet, a fifo; an
        // opaque directory; a symlink replaced by a directory.
        r#"set -e
mkdir -p etc/app/data usr/lib/k/rel bin srv
touch etc/app/.wh.conf
touch etc/app/data/.wh..wh..opq; printf c > etc/app/data/c
touch usr/lib/k/.wh.two usr/lib/k/.wh.abs bin/.wh.vi srv/.wh.fifo
printf in > usr/lib/k/rel/inside
"#,
        // 3: a file re-created after its whiteout, a directory deleted whole, new hard links and
        // a relative symlink.
        r#"set -e
mkdir -p etc/app srv/newdir
printf 'v3\n' > etc/app/conf; chmod 0600 etc/app/conf
touch "srv/.wh.odd name é"
printf h > srv/h1; ln srv/h1 srv/h2; chmod 0604 srv/h1
ln -s ../../etc/app/conf srv/newdir/conf-link
"#,
    ];
    for (i, script) in scripts.iter().enumerate() {
        let t = work.join(format!("layer{}", i + 1));
        std::fs::create_dir_all(&t).unwrap();
        Cmd::new("sh").args(["-c", script]).current_dir(&t).ok();
        if i == 0 {
            set_xattr(&t.join("usr/lib/k/one"), "user.kcli", b"hello");
            set_xattr(&t.join("etc/app"), "user.kcli.dir", b"1");
            set_xattr(&t.join("dev"), "user.kcli.dir", b"2");
            set_xattr(&t.join("usr/lib/k/suid"), "trusted.kcli", b"\x00\x01bin");
        }
        layers.push(tar_layer(layout, &t, i != 1));
    }
    write_image(layout, &layers, name)
}

/// What the layers above must have made of the tree.
fn check_multi_layer_tree(t: &BTreeMap<String, Entry>) {
    let get = |p: &str| {
        t.get(p)
            .unwrap_or_else(|| panic!("{p} is missing from the unpacked tree"))
    };
    for gone in [
        "usr/lib/k/two",
        "usr/lib/k/abs",
        "bin/vi",
        "srv/fifo",
        "etc/app/data/a",
        "etc/app/data/b",
        "srv/odd name é",
        "srv/odd name é/f",
        "usr/lib/k/rel/.wh.two",
    ] {
        assert!(!t.contains_key(gone), "{gone} should have been deleted");
    }
    assert!(
        !t.keys().any(|k| k.contains(".wh.")),
        "a whiteout file is in the tree"
    );
    assert!(t.contains_key("bin/sh") && t.contains_key("bin/busybox"));
    let conf = get("etc/app/conf");
    assert_eq!(conf.sha256, digest_of(b"v3\n"));
    assert_eq!(conf.mode, 0o100600);
    assert_eq!(
        t.range("etc/app/data/".to_string()..)
            .take_while(|(k, _)| k.starts_with("etc/app/data/"))
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["etc/app/data/c"]
    );
    let one = get("usr/lib/k/one");
    assert_eq!(one.size, 3_000_000);
    assert_eq!(one.mtime, 1_000_000_000);
    assert_eq!(one.xattrs, [("user.kcli".to_string(), b"hello".to_vec())]);
    assert_eq!(get("srv/three").same_as.as_deref(), Some("srv/three"));
    assert_eq!(one.same_as.as_deref(), Some("srv/three"));
    assert_eq!(get("srv/h2").same_as.as_deref(), Some("srv/h1"));
    assert_eq!(get("srv/h2").mode, 0o100604);
    assert_eq!(get("usr/lib/k/dangling").link, "/nowhere");
    assert_eq!(get("srv/newdir/conf-link").link, "../../etc/app/conf");
    assert_eq!(get("usr/lib/k/rel").mode & 0o170000, 0o040000);
    assert!(t.contains_key("usr/lib/k/rel/inside"));
    assert_eq!(get("usr/lib/k/suid").mode, 0o104755);
    assert_eq!(
        get("usr/lib/k/suid").xattrs,
        [("trusted.kcli".to_string(), b"\x00\x01bin".to_vec())]
    );
    assert_eq!(get("usr/lib/k/sgid").mode, 0o102711);
    assert_eq!(get("srv/tmp2").mode, 0o041777);
    let null = get("dev/kcli-null");
    assert_eq!(null.mode & 0o170000, 0o020000);
    assert_eq!(null.rdev, libc::makedev(1, 3));
    // A directory's entry in a later layer is its whole metadata: layer 3's etc/app has no
    // xattrs (as overlayfs shows it), dev is in no later layer.
    assert_eq!(get("etc/app").xattrs, []);
    assert_eq!(
        get("dev").xattrs,
        [("user.kcli.dir".to_string(), b"2".to_vec())]
    );
}

#[test]
fn a_multi_layer_image_round_trips_through_registry_save_and_load_with_identical_trees() {
    require_program("skopeo", "skopeo");
    let work = scratch("kcli-multi");
    let layout = work.join("layout");
    let (manifest, config) = multi_layer_image(&work, &layout, "docker.io/kcli/multi:1");
    let archive = work.join("multi-oci.tar");
    oci_archive(&layout, &archive);

    // Loaded from the OCI archive made here.
    let d1 = Daemon::start("native");
    let out = d1.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out.stdout, "Loaded image: kcli/multi:1\n");
    let (id, m, layers) = kinspect(&d1, "kcli/multi:1");
    assert_eq!(
        (id.as_str(), m.as_str()),
        (config.as_str(), manifest.as_str())
    );
    assert_eq!(layers.len(), 4);
    let t1 = unpacked_tree(&d1, "kcli/multi:1");
    check_multi_layer_tree(&t1);

    // Pushed by kapsel to the registry, pulled by kapsel into a fresh root.
    let reg = Registry::start(5211);
    let name = format!("{}/kcli/multi:1", reg.host());
    d1.ok(&["tag", "kcli/multi:1", &name]);
    let out = d1.ok(&["push", &name]);
    assert!(
        out.stdout
            .contains(&format!("1: digest: {manifest} size: ")),
        "{out}"
    );
    assert_eq!(reg.digest("kcli/multi:1"), manifest);
    let d2 = Daemon::start("native");
    let out = d2.ok(&["pull", &name]);
    assert!(
        out.stdout.contains(&format!("Digest: {manifest}\n")),
        "{out}"
    );
    assert_eq!(
        kinspect(&d2, &name),
        (config.clone(), manifest.clone(), layers.clone())
    );
    let t2 = unpacked_tree(&d2, &name);
    assert_eq!(
        diff_trees(&t1, &t2),
        Vec::<String>::new(),
        "loaded vs pulled"
    );

    // The overlayfs snapshotter's layers, stacked by the kernel, show the same tree.
    let d4 = Daemon::start("overlayfs");
    d4.ok(&["pull", &name]);
    let merged = work.join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let lower = overlay_lowerdirs(&d4, &name);
    Cmd::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={lower}"))
        .arg(&merged)
        .ok();
    let t4 = tree(&merged);
    Cmd::new("umount").arg(&merged).ok();
    assert_eq!(
        diff_trees(&t1, &t4),
        Vec::<String>::new(),
        "native vs overlayfs layers"
    );

    // Saved by kapsel in both formats, loaded into fresh roots.
    for (format, fresh_manifest) in [("docker", false), ("oci", true)] {
        let saved = work.join(format!("saved-{format}.tar"));
        d2.ok(&[
            "save",
            "--format",
            format,
            "-o",
            saved.to_str().unwrap(),
            &name,
        ]);
        let d3 = Daemon::start("native");
        let out = d3.ok(&["load", "-i", saved.to_str().unwrap()]);
        assert_eq!(out.stdout, format!("Loaded image: {name}\n"), "{format}");
        let (id, m, l) = kinspect(&d3, &name);
        assert_eq!(id, config, "{format}");
        assert_eq!(l, layers, "{format}");
        if fresh_manifest {
            assert_eq!(m, manifest, "{format}");
        }
        let t3 = unpacked_tree(&d3, &name);
        assert_eq!(
            diff_trees(&t1, &t3),
            Vec::<String>::new(),
            "loaded vs saved as {format} and loaded again"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

// ---------------------------------------------------------------------------------------------
// 3. Bad input

/// What the fake registry does when asked for the layer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LayerMode {
    /// Serve it (with Range support).
    Good,
    /// Answer 500 with a registry error body.
    Fail500,
    /// Send the headers and half of the bytes, then close the connection.
    Drop,
    /// Send as many bytes as expected, one of them changed.
    WrongBytes,
}

/// A registry that misbehaves on purpose, written here with std's TcpListener: Debian's
/// docker-registry cannot be made to fail a blob with a 500, drop a connection in the middle
/// of one, or serve bytes that do not match their digest. It serves the busybox fixture
/// (manifest, config, layer) under every repository name, one request per connection.
struct FakeRegistry {
    port: u16,
    mode: Arc<std::sync::Mutex<LayerMode>>,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    fn start() -> FakeRegistry {
        let f = Fixtures::get();
        let blobs = f.dir().join("busybox-oci/blobs/sha256");
        let read = |key: &str| {
            let d = fixture_env(key);
            (
                d.clone(),
                std::fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap(),
            )
        };
        let (manifest, config, layer) = (
            read("MANIFEST_DIGEST"),
            read("CONFIG_DIGEST"),
            read("LAYER_DIGEST"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = FakeRegistry {
            port,
            mode: Arc::new(std::sync::Mutex::new(LayerMode::Good)),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let (mode, requests, stop) = (r.mode.clone(), r.requests.clone(), r.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let m = *mode.lock().unwrap();
                        if let Some(line) = serve(s, m, &manifest, &config, &layer) {
                            requests.lock().unwrap().push(line);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        r
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn set(&self, m: LayerMode) {
        *self.mode.lock().unwrap() = m;
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers one request; returns its first line and Range header.
fn serve(
    s: TcpStream,
    mode: LayerMode,
    manifest: &(String, Vec<u8>),
    config: &(String, Vec<u8>),
    layer: &(String, Vec<u8>),
) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    let mut range: Option<u64> = None;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).ok()? == 0 || l == "\r\n" {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    let mut w = s;
    let parts: Vec<&str> = first.split_whitespace().collect();
    let (method, path) = (parts.first()?.to_string(), parts.get(1)?.to_string());
    let head = method == "HEAD";
    let send = |w: &mut TcpStream, status: &str, ctype: &str, extra: &str, body: &[u8]| {
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        );
        if !head {
            let _ = w.write_all(body);
        }
    };
    let line = format!("{} {path} range={range:?}", method);
    if path == "/v2/" {
        send(&mut w, "200 OK", "application/json", "", b"{}");
    } else if path.contains("/manifests/") {
        send(
            &mut w,
            "200 OK",
            "application/vnd.oci.image.manifest.v1+json",
            &format!("Docker-Content-Digest: {}\r\n", manifest.0),
            &manifest.1,
        );
    } else if path.ends_with(&format!("/blobs/{}", config.0)) {
        send(&mut w, "200 OK", "application/octet-stream", "", &config.1);
    } else if path.ends_with(&format!("/blobs/{}", layer.0)) {
        let from = range.unwrap_or(0) as usize;
        let body = &layer.1[from..];
        let (status, extra) = if from > 0 {
            (
                "206 Partial Content",
                format!(
                    "Content-Range: bytes {from}-{}/{}\r\n",
                    layer.1.len() - 1,
                    layer.1.len()
                ),
            )
        } else {
            ("200 OK", String::new())
        };
        match mode {
            LayerMode::Good => send(&mut w, status, "application/octet-stream", &extra, body),
            LayerMode::Fail500 => send(
                &mut w,
                "500 Internal Server Error",
                "application/json",
                "",
                br#"{"errors":[{"code":"UNKNOWN","message":"kcli: the disk is on fire"}]}"#,
            ),
            LayerMode::Drop => {
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{extra}\r\n",
                    body.len()
                );
                let _ = w.write_all(&body[..body.len() / 2]);
                let _ = w.flush();
                let _ = w.shutdown(std::net::Shutdown::Both);
            }
            LayerMode::WrongBytes => {
                let mut bad = body.to_vec();
                let mid = bad.len() / 2;
                bad[mid] ^= 0x55;
                send(&mut w, status, "application/octet-stream", &extra, &bad);
            }
        }
    } else {
        send(
            &mut w,
            "404 Not Found",
            "application/json",
            "",
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no such thing"}]}"#,
        );
    }
    Some(line)
}

#[test]
fn a_registry_failing_a_blob_is_a_clear_error_and_leaves_nothing_half_written() {
    let reg = FakeRegistry::start();
    let d = Daemon::start("overlayfs");
    let layer = fixture_env("LAYER_DIGEST");
    for (mode, repo, expect) in [
        (LayerMode::Fail500, "kcli/e500", "500"),
        (
            LayerMode::WrongBytes,
            "kcli/mismatch",
            "verification failed",
        ),
        (LayerMode::Drop, "kcli/drop", ""),
    ] {
        reg.set(mode);
        let name = format!("{}/{repo}:1", reg.host());
        let out = d.kapsel(&["pull", &name]).fails();
        assert_eq!(out.exit_code(), 1, "{mode:?}: {out}");
        let err = out.stderr.trim();
        assert!(err.starts_with("kapsel: "), "{mode:?}: {out}");
        assert!(err.contains(repo), "{mode:?}: the image is named: {out}");
        assert!(err.contains(&layer), "{mode:?}: the blob is named: {out}");
        assert!(err.contains(expect), "{mode:?}: says {expect:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{mode:?}: {out}");
        if mode != LayerMode::Drop {
            assert_store_clean(&d);
        }
    }
    // A dropped connection (after the client's own resumed retries) leaves what arrived in
    // one ingest, kept on purpose for the next pull to resume, as containerd does: it is not a
    // blob, and no image refers to it.
    let ingests = list(&d.root().join("content/ingest"));
    assert_eq!(ingests.len(), 1, "{ingests:?}");
    assert_eq!(d.ok(&["images", "-q"]).stdout, "");
    assert_eq!(d.blobs(), Vec::<String>::new(), "blobs left");

    // The same image from a registry that behaves: the pull resumes the kept bytes and
    // completes; no ingest stays behind.
    reg.set(LayerMode::Good);
    reg.requests.lock().unwrap().clear();
    let name = format!("{}/kcli/drop:1", reg.host());
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout
            .contains(&format!("Digest: {}\n", fixture_env("MANIFEST_DIGEST"))),
        "{out}"
    );
    let (id, _, _) = kinspect(&d, &name);
    assert_eq!(id, fixture_env("CONFIG_DIGEST"));
    assert!(list(&d.root().join("content/ingest")).is_empty());
    let reqs = reg.requests.lock().unwrap().clone();
    let layer_reqs: Vec<&String> = reqs.iter().filter(|r| r.contains(&layer)).collect();
    assert_eq!(layer_reqs.len(), 1, "{reqs:#?}");
    assert!(
        layer_reqs[0].contains("range=Some(") && !layer_reqs[0].contains("range=Some(0)"),
        "the layer is resumed: {reqs:#?}"
    );
}

/// The byte offset and size of the member of `tar` whose name ends with `suffix`.
fn tar_member(tar: &[u8], suffix: &str) -> (usize, usize) {
    let mut off = 0;
    while off + 512 <= tar.len() && tar[off] != 0 {
        let h = &tar[off..off + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size =
            usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .unwrap();
        if name.ends_with(suffix) {
            return (off + 512, size);
        }
        off += 512 + size.div_ceil(512) * 512;
    }
    panic!("no member ending with {suffix}");
}

#[test]
fn a_truncated_or_corrupt_archive_is_a_clear_error_and_leaves_nothing_half_written() {
    let f = Fixtures::get();
    let work = scratch("kcli-badarchive");
    let d = Daemon::start("overlayfs");
    let layer = fixture_env("LAYER_DIGEST");
    let docker = std::fs::read(f.docker_archive()).unwrap();
    let oci = std::fs::read(f.oci_archive()).unwrap();

    // Cut in the middle of the layer.
    let truncated = work.join("truncated.tar");
    std::fs::write(&truncated, &docker[..docker.len() * 6 / 10]).unwrap();
    // One byte of the layer changed: its digest no longer matches.
    let corrupt = work.join("corrupt.tar");
    let (start, size) = tar_member(&oci, layer.trim_start_matches("sha256:"));
    let mut bytes = oci.clone();
    bytes[start + size / 2] ^= 0x55;
    std::fs::write(&corrupt, &bytes).unwrap();
    // docker-archive layers are not named by digest: one changed byte of busybox's data is
    // found when the unpacked layer's digest is not the config's diff id.
    let corrupt_docker = work.join("corrupt-docker.tar");
    let diff_id = fixture_env("DIFF_ID");
    let (start, size) = tar_member(&docker, "layer.tar");
    let mut bytes = docker.clone();
    let inner = &bytes[start..start + size];
    let (bb, bb_size) = tar_member(inner, "bin/busybox");
    bytes[start + bb + bb_size / 2] ^= 0x55;
    std::fs::write(&corrupt_docker, &bytes).unwrap();
    // Not an archive at all.
    let garbage = work.join("garbage.tar");
    std::fs::write(
        &garbage,
        b"this is not a tar archive, just some text\n".repeat(100),
    )
    .unwrap();

    for (file, expect) in [
        (&truncated, "truncated"),
        (&corrupt, layer.as_str()),
        (&corrupt_docker, diff_id.as_str()),
        (&garbage, "not a tar archive"),
    ] {
        let out = d.kapsel(&["load", "-i", file.to_str().unwrap()]).fails();
        assert_eq!(out.exit_code(), 1, "{out}");
        let err = out.stderr.trim();
        assert!(
            err.contains(file.to_str().unwrap()),
            "the file is named: {out}"
        );
        assert!(err.contains(expect), "{expect}: {out}");
        assert_eq!(err.lines().count(), 1, "{out}");
        assert_eq!(out.stdout, "", "{out}");
        assert_store_clean(&d);
        // Through stdin too: the same error without a file name to give.
        let out = d
            .kapsel(&["load"])
            .stdin(std::fs::read(file).unwrap())
            .fails();
        assert_eq!(out.exit_code(), 1, "{out}");
        assert!(out.stderr.contains(expect), "{expect}: {out}");
        assert_store_clean(&d);
    }
    // A good archive loads afterwards.
    d.ok(&["load", "-i", f.docker_archive().to_str().unwrap()]);
    assert_eq!(kinspect(&d, "busybox").0, fixture_env("CONFIG_DIGEST"));
    let _ = std::fs::remove_dir_all(&work);
}

/// kapseld's root on an 8 MiB tmpfs: loading and pulling an image with a 16 MiB layer fail
/// with "no space left" naming the blob and leave the store empty; on the same root grown to
/// 128 MiB the pull and the load then work.
#[test]
fn a_full_disk_is_a_clear_error_and_a_bigger_disk_then_works() {
    require_program("skopeo", "skopeo");
    let work = scratch("kcli-full");
    let layout = work.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let tree = work.join("big");
    std::fs::create_dir_all(&tree).unwrap();
    Cmd::new("sh")
        .args(["-c", "head -c 16777216 /dev/urandom > big"])
        .current_dir(&tree)
        .ok();
    let layers = vec![busybox_layer(&layout), tar_layer(&layout, &tree, false)];
    let big = layers[1].digest.clone();
    let (manifest, config) = write_image(&layout, &layers, "docker.io/kcli/big:1");
    let archive = work.join("big-oci.tar");
    oci_archive(&layout, &archive);
    let reg = Registry::start(5212);
    let name = format!("{}/kcli/big:1", reg.host());
    Cmd::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{name}"))
        .timeout(Duration::from_secs(120))
        .ok();

    let mut d = Daemon::prepare("kcli-full");
    std::fs::create_dir_all(d.root()).unwrap();
    Cmd::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "kcli-full"])
        .arg(d.root())
        .ok();
    d.spawn("overlayfs");

    let out = d.kapsel(&["load", "-i", archive.to_str().unwrap()]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    let err = out.stderr.to_lowercase();
    assert!(err.contains("no space left on device"), "{out}");
    assert!(
        err.contains(big.trim_start_matches("sha256:")),
        "the blob is named: {out}"
    );
    assert!(
        err.contains(archive.to_str().unwrap()),
        "the file is named: {out}"
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    assert_store_clean(&d);

    let out = d.kapsel(&["pull", &name]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    let err = out.stderr.to_lowercase();
    assert!(err.contains("no space left on device"), "{out}");
    // Layers download and unpack in parallel: the disk fills up under whichever writes first.
    // (skopeo compressed the plain tar layer on the way in: the registry has its own digests.)
    let raw = Cmd::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{name}"))
        .ok()
        .stdout;
    let pushed: Vec<String> = json(&raw)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(
        pushed.iter().any(|l| err.contains(l.as_str())),
        "a layer blob is named: {out}"
    );
    assert!(err.contains("kcli/big"), "the image is named: {out}");
    assert_store_clean(&d);

    Cmd::new("mount")
        .args(["-o", "remount,size=128m"])
        .arg(d.root())
        .ok();
    let out = d.ok(&["pull", &name]);
    // skopeo compressed the plain tar layer on the way in: the registry's manifest is its own.
    assert!(
        out.stdout
            .contains(&format!("Digest: {}\n", digest_of(raw.as_bytes()))),
        "{out}"
    );
    assert_eq!(kinspect(&d, &name).0, config);
    let out = d.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out.stdout, "Loaded image: kcli/big:1\n");
    assert_eq!(
        kinspect(&d, "kcli/big:1"),
        (
            config,
            manifest,
            layers.iter().map(|l| l.diff_id.clone()).collect()
        )
    );
    assert!(list(&d.root().join("content/ingest")).is_empty());
    d.stop();
    let _ = std::fs::remove_dir_all(&work);
}
