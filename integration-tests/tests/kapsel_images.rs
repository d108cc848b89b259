//! Images through kapseld and the `kapsel` CLI against the real peers (issue 4): archives
//! exchanged with Debian's dockerd, podman and containerd; a multi-layer image made here
//! (whiteouts, an opaque directory, hard links, symlinks, modes, owners, xattrs, a device node)
//! round-tripped through `docker-registry`, `kapsel save` and `kapsel load` with the same
//! digests and the same unpacked trees; and bad input — a registry failing a blob, a truncated
//! or corrupt archive, a full disk — each a clear error with nothing left half-written.
//!
//! Every daemon has a private root under `/tmp/kcli-*`; registries use ports 5211-5219.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kapsel_integration_tests::clients::{Containerd, Dockerd, Podman};
use kapsel_integration_tests::kapseld::{add_blob, fixture_env, list, Daemon, Registry};
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

/// Checks the store holds nothing half-written: no ingest, no image, and no blob from `absent`.
fn assert_store_clean(d: &Daemon, absent: &[&str]) {
    let ingest = list(&d.root().join("content/ingest"));
    assert!(ingest.is_empty(), "ingests left: {ingest:?}");
    assert_eq!(d.ok(&["images", "-q"]).stdout, "", "an image is listed");
    let blobs = d.blobs();
    for a in absent {
        let hex = a.trim_start_matches("sha256:");
        assert!(
            !blobs.iter().any(|b| b == hex),
            "blob {a} is in the store: {blobs:?}"
        );
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
    docker.docker(&["create", "--name", &ctr, "busybox:latest"]).ok();
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
    let out = docker
        .docker(&["load", "-i", ksave.to_str().unwrap()])
        .ok();
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
        let config = json(&raw)["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string();
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
        ctrd.ctr(&["image", "rm", "docker.io/kcli/third:3"]).output();
    }
    ctrd.stop();
    let _ = std::fs::remove_dir_all(&work);
}
