//! kapseld and the kapsel CLI, as built (`target/release/{kapseld,kapsel}`, else `target/debug/`,
//! or the directory in `KAPSEL_MANAGER_BIN_DIR`): each test runs its own daemon on a private root, state
//! directory and socket (`/tmp/kcore-*`), and drives it through the CLI only. The registry
//! tests run Debian's `docker-registry` with a private configuration on their own loopback
//! port and put the fixture image into it with `skopeo`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kapsel_integration_tests::kapseld::{
    bin, fixture_env, list, sha256_file, tar_layer, wait_for, write_image, Daemon, Registry,
};
use kapsel_integration_tests::{require_program, unique, Cmd, Fixtures};

#[test]
fn kapsel_says_how_to_start_kapseld_when_it_is_not_running() {
    let sock = format!("/tmp/{}.sock", unique("kcore-absent"));
    let out = Cmd::new(bin("kapsel"))
        .args(["--address", &sock, "images"])
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "kapsel: cannot connect to kapseld at {sock}: is it running? start it with: kapseld &"
        )
    );
    // version prints the client part, then the same error.
    let out = Cmd::new(bin("kapsel"))
        .args(["--address", &sock, "version"])
        .fails();
    assert!(out.stdout.contains("Client:"), "{out}");
    assert!(out.stderr.contains("is it running?"), "{out}");
}

#[test]
fn version_info_and_an_empty_store() {
    let d = Daemon::start("overlayfs");
    let v = d.ok(&["version"]);
    assert!(v.stdout.contains("Server:"), "{v}");
    assert!(
        v.stdout
            .contains(&format!("Version:          {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let info = d.ok(&["info"]);
    assert!(
        info.stdout.contains(" Storage Driver: overlayfs\n"),
        "{info}"
    );
    assert!(
        info.stdout.contains(&format!(
            "  Root Dir: {}",
            d.root().join("snapshots/overlayfs").display()
        )),
        "{info}"
    );
    assert!(info.stdout.contains(" Images: 0\n"), "{info}");
    assert!(info.stdout.contains("(schema 3)"), "{info}");
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["info", "--format", "json"]).stdout).unwrap();
    assert_eq!(json["Driver"], "overlayfs");
    let imgs = d.ok(&["images"]);
    assert_eq!(
        imgs.stdout,
        "REPOSITORY   TAG   IMAGE ID   CREATED   SIZE\n"
    );
    assert_eq!(d.ok(&["images", "-q"]).stdout, "");
    let out = d.kapsel(&["rmi", "nothere:1"]).fails();
    assert_eq!(out.exit_code(), 1);
    assert_eq!(out.stderr.trim(), "kapsel: no such image: nothere:1");
    let out = d.kapsel(&["pull", "Not/Valid"]).fails();
    assert!(out.stderr.contains("invalid reference format"), "{out}");
}

#[test]
fn a_second_daemon_on_the_same_root_is_refused_and_sigterm_stops_cleanly() {
    let mut d = Daemon::start("native");
    let out = Cmd::new(bin("kapseld"))
        .args(["--root", &d.root().display().to_string()])
        .args(["--state", &d.dir.join("state2").display().to_string()])
        .args(["--address", &d.dir.join("other.sock").display().to_string()])
        .timeout(Duration::from_secs(30))
        .fails();
    assert_eq!(out.exit_code(), 1);
    assert!(
        out.stderr.contains("is in use by another kapseld (pid"),
        "{out}"
    );
    let st = d.stop().unwrap();
    assert!(st.success(), "kapseld exited with {st:?}\n{}", d.log());
    assert!(!d.sock.exists(), "socket left behind");
    assert!(
        !d.dir.join("state/kapseld.pid").exists(),
        "pid file left behind"
    );
    assert!(d.log().contains("kapseld stopped"));
}

#[test]
fn load_tag_save_and_rmi_leave_no_blob_behind() {
    let d = Daemon::start("overlayfs");
    let f = Fixtures::get();
    let config = fixture_env("CONFIG_DIGEST");
    let short = &config["sha256:".len().."sha256:".len() + 12];
    let out = d.ok(&["load", "-i", &f.docker_archive().display().to_string()]);
    assert_eq!(out.stdout, "Loaded image: busybox:latest\n");
    let imgs = d.ok(&["images"]);
    let lines: Vec<&str> = imgs.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{imgs}");
    let cols: Vec<&str> = lines[1]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cols[..3], ["busybox", "latest", short], "{imgs}");
    assert!(cols[3].ends_with("years ago"), "{imgs}");
    // Unpacked: the busybox binary is in the image's snapshot.
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "inspect", "busybox"]).stdout).unwrap();
    assert_eq!(inspect[0]["Id"], config.as_str());
    assert_eq!(inspect[0]["Kapsel"]["Unpacked"], true);
    assert_eq!(inspect[0]["RepoTags"][0], "busybox:latest");

    d.ok(&["tag", "busybox", "127.0.0.1:5000/kcore/bb:2"]);
    let q = d.ok(&["images", "-q"]);
    assert_eq!(q.stdout, format!("{short}\n"));
    let out = d.kapsel(&["rmi", short]).fails();
    assert!(out.stderr.contains("must be forced"), "{out}");

    // save -o, and save to stdout, both docker-archives with the image in them.
    let tar = d.dir.join("saved.tar");
    d.ok(&["save", "-o", &tar.display().to_string(), "busybox"]);
    let listing = Cmd::new("tar").arg("tf").arg(&tar).ok().stdout;
    assert!(listing.contains("manifest.json"), "{listing}");
    assert!(
        listing.contains(&format!("{}.json", &config["sha256:".len()..])),
        "{listing}"
    );
    let streamed = d.ok(&["save", "busybox"]);
    assert!(streamed.stdout.len() > 1_000_000);

    // Load what we saved, through stdin, into a second daemon: the same image id.
    let d2 = Daemon::start("native");
    let out = d2
        .kapsel(&["load"])
        .stdin(std::fs::read(&tar).unwrap())
        .ok();
    assert_eq!(out.stdout, "Loaded image: busybox:latest\n");
    assert_eq!(d2.ok(&["images", "-q"]).stdout, format!("{short}\n"));

    let out = d.ok(&["rmi", "busybox"]);
    assert_eq!(out.stdout, "Untagged: busybox:latest\n");
    assert!(!d.blobs().is_empty());
    let out = d.ok(&["rmi", "127.0.0.1:5000/kcore/bb:2"]);
    assert!(
        out.stdout
            .starts_with("Untagged: 127.0.0.1:5000/kcore/bb:2\nDeleted: "),
        "{out}"
    );
    assert!(d.blobs().is_empty(), "blobs left: {:?}", d.blobs());
    assert!(
        d.snapshots("overlayfs").is_empty(),
        "snapshots left: {:?}",
        d.snapshots("overlayfs")
    );
    assert_eq!(d.ok(&["images", "-q"]).stdout, "");
}

#[test]
fn pull_push_and_prune_through_a_real_registry() {
    require_program("skopeo", "skopeo");
    let reg = Registry::start(5201);
    let f = Fixtures::get();
    let manifest = fixture_env("MANIFEST_DIGEST");
    let config = fixture_env("CONFIG_DIGEST");
    let short = &config["sha256:".len().."sha256:".len() + 12];
    Cmd::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!(
            "oci:{}:latest",
            f.dir().join("busybox-oci").display()
        ))
        .arg(format!("docker://{}/kcore/busybox:1", reg.host()))
        .timeout(Duration::from_secs(120))
        .ok();
    assert_eq!(reg.digest("kcore/busybox:1"), manifest);

    let d = Daemon::start("overlayfs");
    let name = format!("{}/kcore/busybox:1", reg.host());
    let out = d.ok(&["pull", &name]);
    assert!(out.stdout.starts_with("1: Pulling from "), "{out}");
    assert!(out.stdout.contains(": Pull complete\n"), "{out}");
    assert!(
        out.stdout.contains(&format!("Digest: {manifest}\n")),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("Status: Downloaded newer image for {name}\n")),
        "{out}"
    );
    assert!(out.stdout.ends_with(&format!("{name}\n")), "{out}");
    // Again: nothing new.
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout
            .contains(&format!("Status: Image is up to date for {name}\n")),
        "{out}"
    );
    let imgs = d.ok(&["images", "--digests"]);
    assert!(
        imgs.stdout.contains(&format!(
            "{}/kcore/busybox   1     {manifest}   {short}",
            reg.host()
        )),
        "{imgs}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "inspect", &name]).stdout).unwrap();
    assert_eq!(inspect[0]["Kapsel"]["Unpacked"], true);
    // The unpacked tree holds the fixture's busybox, byte for byte.
    let chain = inspect[0]["Kapsel"]["ChainID"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.snapshots("overlayfs").len() == 1,
        "{:?}",
        d.snapshots("overlayfs")
    );
    let snapdir = d.root().join("snapshots/overlayfs/snapshots");
    let found = list(&snapdir).into_iter().any(|id| {
        let meta = std::fs::read_to_string(snapdir.join(&id).join("meta.json")).unwrap_or_default();
        meta.contains(&chain)
            && std::fs::read(snapdir.join(&id).join("fs/bin/busybox")).ok()
                == std::fs::read(f.rootfs().join("bin/busybox")).ok()
    });
    assert!(found, "no snapshot named {chain} with bin/busybox");

    // Push under a new name: the registry serves the same manifest digest.
    let pushed = format!("{}/kcore/pushed:2", reg.host());
    d.ok(&["tag", &name, &pushed]);
    let out = d.ok(&["push", &pushed]);
    assert!(
        out.stdout.starts_with(&format!(
            "The push refers to repository [{}/kcore/pushed]\n",
            reg.host()
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("2: digest: {manifest} size: ")),
        "{out}"
    );
    assert_eq!(reg.digest("kcore/pushed:2"), manifest);

    // A missing tag: a clear error naming it, exit 1, nothing recorded.
    let out = d
        .kapsel(&["pull", &format!("{}/kcore/busybox:nope", reg.host())])
        .fails();
    assert_eq!(out.exit_code(), 1);
    assert!(out.stderr.contains("kcore/busybox:nope"), "{out}");
    assert!(out.stderr.contains("not found"), "{out}");

    // prune -a removes both names and every blob and snapshot.
    let out = d.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.stdout.contains(&format!("untagged: {name}")), "{out}");
    assert!(out.stdout.contains("Total reclaimed space: "), "{out}");
    assert_eq!(d.ok(&["images", "-q"]).stdout, "");
    assert!(d.blobs().is_empty(), "blobs left: {:?}", d.blobs());
    assert!(
        d.snapshots("overlayfs").is_empty(),
        "snapshots left: {:?}",
        d.snapshots("overlayfs")
    );
}

#[test]
fn sigkilled_daemon_restarts_with_a_consistent_store() {
    let mut d = Daemon::start("native");
    let f = Fixtures::get();
    d.ok(&["load", "-i", &f.oci_archive().display().to_string()]);
    // SIGKILL: no shutdown at all.
    let mut c = d.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    d.spawn("native");
    let imgs = d.ok(&["images"]);
    assert!(imgs.stdout.contains("busybox"), "{imgs}");
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "inspect", "busybox"]).stdout).unwrap();
    assert_eq!(inspect[0]["Kapsel"]["Unpacked"], true);
    // The store the checks below look at really holds the image (so "empty" means removed).
    assert!(!d.blobs().is_empty(), "no blobs after the restart");
    assert!(
        !d.snapshots("native").is_empty(),
        "no snapshots after the restart"
    );
    d.ok(&["rmi", "busybox"]);
    assert!(d.blobs().is_empty(), "blobs left: {:?}", d.blobs());
    assert!(
        d.snapshots("native").is_empty(),
        "snapshots left: {:?}",
        d.snapshots("native")
    );
}

/// An OCI layout with three uncompressed layers: a 96 MiB random file and `etc/gone`; then
/// `etc/added`; then a whiteout of `etc/gone`. Returns (layout dir, sha256 of the big file).
fn three_layer_image(dir: &Path) -> (PathBuf, String) {
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let mut layers = Vec::new();
    for (i, script) in [
        "mkdir -p etc && head -c 100663296 /dev/urandom > big && echo bye > etc/gone",
        "mkdir -p etc && echo hello > etc/added",
        "mkdir -p etc && touch etc/.wh.gone",
    ]
    .iter()
    .enumerate()
    {
        let tree = dir.join(format!("tree{i}"));
        std::fs::create_dir_all(&tree).unwrap();
        Cmd::new("sh").args(["-c", script]).current_dir(&tree).ok();
        layers.push(tar_layer(&layout, &tree, false));
    }
    let big = sha256_file(&dir.join("tree0/big"));
    write_image(&layout, &layers, "docker.io/kcore/big:latest");
    (layout, big)
}

#[test]
fn kapseld_killed_mid_pull_restarts_and_the_pull_completes() {
    require_program("skopeo", "skopeo");
    let reg = Registry::start(5202);
    let work = PathBuf::from(format!("/tmp/{}", unique("kcore-image")));
    std::fs::create_dir_all(&work).unwrap();
    let (layout, big) = three_layer_image(&work);
    Cmd::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/kcore/big:1", reg.host()))
        .timeout(Duration::from_secs(300))
        .ok();
    let _ = std::fs::remove_dir_all(&work);
    let manifest = reg.digest("kcore/big:1");
    let name = format!("{}/kcore/big:1", reg.host());

    let mut d = Daemon::start("overlayfs");
    let pulling = d.kapsel(&["pull", &name]).spawn();
    // Kill the daemon once the big layer is partly in an ingest.
    let ingest = d.root().join("content/ingest");
    wait_for("an ingest to start", Duration::from_secs(60), || {
        Cmd::new("du")
            .args(["-sb"])
            .arg(&ingest)
            .ok()
            .stdout
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 1 << 20)
    });
    let mut c = d.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let out = pulling.wait();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(out.stderr.contains("kapseld"), "{out}");

    d.spawn("overlayfs");
    assert_eq!(
        d.ok(&["images", "-q"]).stdout,
        "",
        "a half-pulled image is listed"
    );
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout.contains(&format!("Digest: {manifest}\n")),
        "{out}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "inspect", &name]).stdout).unwrap();
    assert_eq!(inspect[0]["Kapsel"]["Unpacked"], true);
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    // The three committed snapshots: the big file intact, the whiteout applied.
    let snapdir = d.root().join("snapshots/overlayfs/snapshots");
    let ids = list(&snapdir);
    assert_eq!(ids.len(), 3, "{ids:?}");
    let bigs: Vec<PathBuf> = ids
        .iter()
        .map(|i| snapdir.join(i).join("fs/big"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(bigs.len(), 1);
    assert_eq!(sha256_file(&bigs[0]), big);
    assert!(ids
        .iter()
        .any(|i| snapdir.join(i).join("fs/etc/added").exists()));
    // overlayfs's whiteout: a 0:0 character device named like the deleted file.
    let wh = ids
        .iter()
        .map(|i| snapdir.join(i).join("fs/etc/gone"))
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .any(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_char_device()
        });
    assert!(wh, "no whiteout for etc/gone");
    // No leftover ingest, and removing the image frees everything.
    assert!(
        list(&ingest).is_empty(),
        "ingests left: {:?}",
        list(&ingest)
    );
    d.ok(&["rmi", &name]);
    assert!(d.blobs().is_empty(), "blobs left: {:?}", d.blobs());
    assert!(d.snapshots("overlayfs").is_empty());
}

#[test]
fn login_push_pull_and_logout_with_a_password_protected_registry() {
    let reg = Registry::start_with(5203, Some(("kcore", "s3cret-pw")));
    let d = Daemon::start("native");
    let f = Fixtures::get();
    d.ok(&["load", "-i", &f.docker_archive().display().to_string()]);
    let name = format!("{}/kcore/private:1", reg.host());
    d.ok(&["tag", "busybox", &name]);

    // Anonymous: refused, with what to do.
    let out = d.kapsel(&["push", &name]).fails();
    assert_eq!(out.exit_code(), 1);
    assert!(
        out.stderr.contains(&format!("kapsel login {}", reg.host())),
        "{out}"
    );

    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &reg.host()])
        .stdin(b"wrong\n".to_vec())
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        !d.dir.join("client-config.json").exists()
            || !std::fs::read_to_string(d.dir.join("client-config.json"))
                .unwrap()
                .contains(&reg.host())
    );

    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &reg.host()])
        .stdin(b"s3cret-pw\n".to_vec())
        .ok();
    assert_eq!(out.stdout, "Login Succeeded\n");
    let stored = std::fs::read_to_string(d.dir.join("client-config.json")).unwrap();
    assert!(stored.contains(&reg.host()), "{stored}");

    let listed = d.ok(&["images", "--format", "json", &name]);
    let target: serde_json::Value =
        serde_json::from_str(listed.stdout.lines().next().unwrap()).unwrap();
    let out = d.ok(&["push", &name]);
    assert!(
        out.stdout.contains(&format!(
            "1: digest: {} size: ",
            target["Digest"].as_str().unwrap()
        )),
        "{out}"
    );
    d.ok(&["rmi", &name]);
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout.contains("Status: Downloaded newer image for"),
        "{out}"
    );

    let out = d.ok(&["logout", &reg.host()]);
    assert_eq!(
        out.stdout,
        format!("Removing login credentials for {}\n", reg.host())
    );
    let out = d.ok(&["logout", &reg.host()]);
    assert_eq!(out.stdout, format!("Not logged in to {}\n", reg.host()));
    let out = d
        .kapsel(&["pull", &format!("{}/kcore/private:1", reg.host())])
        .fails();
    assert!(out.stderr.contains("authentication required"), "{out}");
}

#[test]
fn events_report_image_changes_as_they_happen() {
    let d = Daemon::start("native");
    let f = Fixtures::get();
    d.ok(&["load", "-i", &f.docker_archive().display().to_string()]);
    let watching = d
        .kapsel(&["events", "--topic", "/images/", "--count", "2"])
        .timeout(Duration::from_secs(60))
        .spawn();
    // The subscriber starts from "now": give it a moment to take the current sequence.
    std::thread::sleep(Duration::from_millis(500));
    d.ok(&["tag", "busybox", "kcore/events:1"]);
    d.ok(&["rmi", "kcore/events:1"]);
    let out = watching.wait();
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains(" default /images/create {\"name\":\"docker.io/kcore/events:1\""),
        "{out}"
    );
    assert!(
        lines[1].contains(" default /images/delete {\"name\":\"docker.io/kcore/events:1\"}"),
        "{out}"
    );
}
