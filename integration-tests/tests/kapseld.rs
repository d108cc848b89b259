//! kapseld and the kapsel CLI, as built (`target/release/{kapseld,kapsel}`, else `target/debug/`,
//! or the directory in `KAPSEL_MANAGER_BIN_DIR`): each test runs its own daemon on a private root, state
//! directory and socket (`/tmp/kcore-*`), and drives it through the CLI only. The registry
//! tests run Debian's `docker-registry` with a private configuration on their own loopback
//! port and put the fixture image into it with `skopeo`; the HTTPS ones serve TLS with a CA
//! and certificates made by the `openssl` command.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kapsel_integration_tests::env::repo_root;
use kapsel_integration_tests::{require_program, require_root, unique, Cmd, CmdOutput, Fixtures};

fn bin(name: &str) -> PathBuf {
    let p = match std::env::var_os("KAPSEL_MANAGER_BIN_DIR") {
        // Relative paths are taken from the repository root, as for KAPSEL_RUNTIME.
        Some(d) => repo_root().join(d).join(name),
        None => {
            let release = repo_root().join("target/release").join(name);
            if release.is_file() {
                release
            } else {
                repo_root().join("target/debug").join(name)
            }
        }
    };
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p kapsel-manager`",
        p.display()
    );
    p
}

fn fixture_env(key: &str) -> String {
    let f = Fixtures::get();
    let text = std::fs::read_to_string(f.dir().join("fixtures.env")).expect("fixtures.env");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("fixtures.env has no {key}"))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A kapseld on a private root; SIGTERMed (and its log printed) when dropped.
struct Daemon {
    dir: PathBuf,
    sock: PathBuf,
    child: Option<std::process::Child>,
    /// Flags added to every start (`--certs-dir`, `--insecure-registry`).
    flags: Vec<String>,
}

impl Daemon {
    fn start(snapshotter: &str) -> Daemon {
        Daemon::start_with(snapshotter, &[])
    }

    fn start_with(snapshotter: &str, flags: &[&str]) -> Daemon {
        require_root();
        let dir = PathBuf::from(format!("/tmp/{}", unique("kcore")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Daemon {
            sock: dir.join("kapseld.sock"),
            dir,
            child: None,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        d.spawn(snapshotter);
        d
    }

    fn spawn(&mut self, snapshotter: &str) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("kapseld.log"))
            .unwrap();
        let child = std::process::Command::new(bin("kapseld"))
            .args(["--root", &self.root().display().to_string()])
            .args(["--state", &self.dir.join("state").display().to_string()])
            .args(["--address", &self.sock.display().to_string()])
            .args(["--snapshotter", snapshotter, "--log-level", "debug"])
            .args(&self.flags)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kapseld");
        self.child = Some(child);
        let sock = self.sock.clone();
        wait_for("kapseld's socket", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn kapsel(&self, args: &[&str]) -> Cmd {
        Cmd::new(bin("kapsel"))
            .arg("--address")
            .arg(&self.sock)
            .args(args)
            .env("KAPSEL_CONFIG", self.dir.join("client-config.json"))
            .timeout(Duration::from_secs(120))
    }

    fn ok(&self, args: &[&str]) -> CmdOutput {
        self.kapsel(args).ok()
    }

    fn blobs(&self) -> Vec<String> {
        list(&self.root().join("content/blobs/sha256"))
    }

    fn snapshots(&self, snapshotter: &str) -> Vec<String> {
        list(
            &self
                .root()
                .join("snapshots")
                .join(snapshotter)
                .join("snapshots"),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kapseld.log")).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- kapseld log ({})\n{}", self.dir.display(), self.log());
        }
        // Snapshots may hold mounts only while a container runs (none here).
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Debian's docker-registry on 127.0.0.1:`port` with a private configuration and storage.
struct Registry {
    dir: PathBuf,
    port: u16,
    child: std::process::Child,
}

impl Registry {
    fn start(port: u16) -> Registry {
        Registry::start_with(port, None, None)
    }

    /// With `user` set, the registry wants basic auth (htpasswd, bcrypt) for that user; with
    /// `tls` set, it serves HTTPS only with that certificate and key, and with `tls.1` it also
    /// wants a client certificate signed by the certificate's CA.
    fn start_with(
        port: u16,
        user: Option<(&str, &str)>,
        tls: Option<(&ServerCert, bool)>,
    ) -> Registry {
        require_program("docker-registry", "docker-registry");
        let dir = PathBuf::from(format!("/tmp/{}", unique("kcore-registry")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((u, p)) = user {
            require_program("htpasswd", "apache2-utils");
            let file = dir.join("htpasswd");
            Cmd::new("htpasswd")
                .arg("-Bbc")
                .arg(&file)
                .args([u, p])
                .ok();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kcore\n    path: {}\n",
                file.display()
            ));
        }
        if let Some((t, client_certs)) = tls {
            let mut tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            );
            if client_certs {
                tls.push_str(&format!("    clientcas: [{}]\n", t.ca.display()));
            }
            config = config.replace(
                &format!("  addr: 127.0.0.1:{port}\n"),
                &format!("  addr: 127.0.0.1:{port}\n{tls}"),
            );
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        wait_for("the registry", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Registry { dir, port, child }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The manifest digest skopeo sees for `image` (repo:tag) in this registry.
    fn digest(&self, image: &str) -> String {
        require_program("skopeo", "skopeo");
        let out = Cmd::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/{image}", self.host()))
            .ok();
        let bytes = out.stdout.as_bytes();
        use std::fmt::Write;
        let d = sha256(bytes);
        let mut s = String::from("sha256:");
        for b in d {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// sha256 through coreutils (the test crate has no hashing dependency).
fn sha256(data: &[u8]) -> Vec<u8> {
    let out = Cmd::new("sha256sum").stdin(data.to_vec()).ok();
    let hex = out.stdout.split_whitespace().next().unwrap().to_string();
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

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
    assert!(info.stdout.contains("(schema 2)"), "{info}");
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

fn sha256_file(path: &Path) -> String {
    let out = Cmd::new("sha256sum")
        .arg(path)
        .timeout(Duration::from_secs(120))
        .ok();
    format!("sha256:{}", out.stdout.split_whitespace().next().unwrap())
}

/// Moves `file` into the layout's blobs under its digest; returns (digest, size).
fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let d = sha256_file(file);
    let size = std::fs::metadata(file).unwrap().len();
    std::fs::rename(
        file,
        layout.join("blobs/sha256").join(&d["sha256:".len()..]),
    )
    .unwrap();
    (d, size)
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
        let tar = dir.join(format!("layer{i}.tar"));
        Cmd::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-cf",
            ])
            .arg(&tar)
            .args(["-C"])
            .arg(&tree)
            .arg(".")
            .timeout(Duration::from_secs(120))
            .ok();
        layers.push(add_blob(&layout, &tar));
    }
    let big = sha256_file(&dir.join("tree0/big"));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.0).collect::<Vec<_>>()},
    });
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let (cd, cs) = add_blob(&layout, &cfg_path);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s,
        })).collect::<Vec<_>>(),
    });
    let m_path = dir.join("manifest.json");
    std::fs::write(&m_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (md, ms) = add_blob(&layout, &m_path);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
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
    let reg = Registry::start_with(5203, Some(("kcore", "s3cret-pw")), None);
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

// ---------------------------------------------------------------------------------------------
// HTTPS registries: Debian's docker-registry serving TLS with a certificate made here by the
// `openssl` command, trusted through a certs.d directory given to kapseld with --certs-dir.

/// A CA, a server certificate for 127.0.0.1 (IP SAN only) it signed, and a client
/// certificate it signed.
struct ServerCert {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl ServerCert {
    fn make(dir: &Path) -> ServerCert {
        require_program("openssl", "openssl");
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        Cmd::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=kcore-tls-ca"])
            .args(ec)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt"))
            .ok();
        for (name, cn, ext) in [
            (
                "server",
                "127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "kcore-client",
                "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(p(&format!("{name}.ext")), ext).unwrap();
            Cmd::new("openssl")
                .args(["req", "-subj", &format!("/CN={cn}")])
                .args(ec)
                .arg("-keyout")
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.csr")))
                .ok();
            Cmd::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "7"])
                .arg("-in")
                .arg(p(&format!("{name}.csr")))
                .arg("-CA")
                .arg(p("ca.crt"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p(&format!("{name}.ext")))
                .arg("-out")
                .arg(p(&format!("{name}.crt")))
                .ok();
        }
        ServerCert {
            ca: p("ca.crt"),
            cert: p("server.crt"),
            key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }

    /// `<root>/<host>/ca.crt`, as Docker's certs.d has it; returns the host's directory.
    fn install_ca(&self, root: &Path, host: &str) -> PathBuf {
        let d = root.join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&self.ca, d.join("ca.crt")).unwrap();
        d
    }
}

/// The sha256 digest of a file's bytes.
fn file_digest(path: &Path) -> String {
    let d = sha256(&std::fs::read(path).unwrap());
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What `kapsel push` says the pushed manifest's digest is.
fn pushed_digest(out: &CmdOutput) -> String {
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in the push output: {out}"))
        .to_string()
}

/// `skopeo copy` of `image` from the TLS registry into a `dir:` copy (manifest kept byte for
/// byte), trusting the CA (and presenting the client certificate) in `cert_dir`; returns the
/// copied manifest's digest.
fn skopeo_pull_digest(image: &str, cert_dir: &Path, creds: Option<&str>, out: &Path) -> String {
    require_program("skopeo", "skopeo");
    let mut c = Cmd::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-cert-dir"])
        .arg(cert_dir);
    if let Some(cr) = creds {
        c = c.args(["--src-creds", cr]);
    }
    c.arg(format!("docker://{image}"))
        .arg(format!("dir:{}", out.display()))
        .timeout(Duration::from_secs(120))
        .ok();
    file_digest(&out.join("manifest.json"))
}

#[test]
fn https_registry_trusted_through_certs_dir_with_refusals_explained() {
    require_program("skopeo", "skopeo");
    let tmp = PathBuf::from(format!("/tmp/{}", unique("kcore-tls")));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let cert = ServerCert::make(&tmp.join("pki"));
    let reg = Registry::start_with(5471, None, Some((&cert, false)));
    let host = reg.host();
    let certs = tmp.join("certs.d");
    let host_dir = cert.install_ca(&certs, &host);
    // The same CA for the name the certificate does not list.
    cert.install_ca(&certs, "localhost:5471");

    // skopeo, trusting the same directory, puts the fixture in.
    let f = Fixtures::get();
    Cmd::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-cert-dir"])
        .arg(&host_dir)
        .arg(format!(
            "oci:{}:latest",
            f.dir().join("busybox-oci").display()
        ))
        .arg(format!("docker://{host}/kcore/busybox:1"))
        .timeout(Duration::from_secs(120))
        .ok();
    let manifest = fixture_env("MANIFEST_DIGEST");

    let certs_flag = certs.display().to_string();
    let d = Daemon::start_with("native", &["--certs-dir", &certs_flag]);
    let info: serde_json::Value =
        serde_json::from_str(&d.ok(&["info", "--format", "json"]).stdout).unwrap();
    assert_eq!(info["CertsDirs"], serde_json::json!([certs_flag]));
    let name = format!("{host}/kcore/busybox:1");
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout.contains(&format!("Digest: {manifest}\n")),
        "{out}"
    );

    // Push under another name; skopeo reads back the same manifest, byte for byte.
    let pushed = format!("{host}/kcore/pushed:2");
    d.ok(&["tag", &name, &pushed]);
    let out = d.ok(&["push", &pushed]);
    assert_eq!(pushed_digest(&out), manifest, "{out}");
    assert_eq!(
        skopeo_pull_digest(&pushed, &host_dir, None, &tmp.join("skopeo-copy")),
        manifest
    );

    // The certificate names 127.0.0.1 only: reached as localhost it is refused as such.
    let out = d
        .kapsel(&["pull", "localhost:5471/kcore/busybox:1"])
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr
            .contains("the certificate of registry localhost:5471 is not valid for localhost"),
        "{out}"
    );
    drop(d);

    // Without the CA: refused, naming the registry and where its CA goes.
    let empty = tmp.join("empty-certs.d");
    let empty_flag = empty.display().to_string();
    let d = Daemon::start_with("native", &["--certs-dir", &empty_flag]);
    let out = d.kapsel(&["pull", &name]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "the certificate of registry {host} is signed by an unknown authority"
        )),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "put the registry's CA certificate in {empty_flag}/{host}/ca.crt"
        )),
        "{out}"
    );
    assert!(d.blobs().is_empty(), "nothing stored: {:?}", d.blobs());
    drop(d);

    // Listed as insecure: HTTPS with verification skipped, as Docker does.
    let d = Daemon::start_with(
        "native",
        &["--certs-dir", &empty_flag, "--insecure-registry", &host],
    );
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout.contains(&format!("Digest: {manifest}\n")),
        "{out}"
    );
}

#[test]
fn https_registry_with_basic_auth_and_client_certificates() {
    require_program("skopeo", "skopeo");
    let tmp = PathBuf::from(format!("/tmp/{}", unique("kcore-tls")));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let cert = ServerCert::make(&tmp.join("pki"));
    // The registry also wants a client certificate signed by the CA.
    let reg = Registry::start_with(5472, Some(("kcore", "tls-pw")), Some((&cert, true)));
    let host = reg.host();
    let certs = tmp.join("certs.d");
    let host_dir = cert.install_ca(&certs, &host);
    let certs_flag = certs.display().to_string();
    let d = Daemon::start_with("native", &["--certs-dir", &certs_flag]);
    let f = Fixtures::get();
    d.ok(&["load", "-i", &f.docker_archive().display().to_string()]);
    let name = format!("{host}/kcore/private:1");
    d.ok(&["tag", "busybox", &name]);

    // No client certificate yet: the registry ends the handshake.
    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &host])
        .stdin(b"tls-pw\n".to_vec())
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "{host} refused the client certificate (sslv3 alert bad certificate): put a client \
             certificate the registry accepts in {certs_flag}/{host}/client.cert"
        )),
        "{out}"
    );

    // A .cert without its .key is an error that says so.
    std::fs::copy(&cert.client_cert, host_dir.join("client.cert")).unwrap();
    let out = d.kapsel(&["pull", &name]).fails();
    assert!(
        out.stderr.contains("the client certificate has no key"),
        "{out}"
    );
    std::fs::copy(&cert.client_key, host_dir.join("client.key")).unwrap();

    // Anonymous push: refused with what to do.
    let out = d.kapsel(&["push", &name]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr.contains(&format!("kapsel login {host}")),
        "{out}"
    );
    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &host])
        .stdin(b"wrong\n".to_vec())
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &host])
        .stdin(b"tls-pw\n".to_vec())
        .ok();
    assert_eq!(out.stdout, "Login Succeeded\n");

    let out = d.ok(&["push", &name]);
    let digest = pushed_digest(&out);
    assert_eq!(
        skopeo_pull_digest(&name, &host_dir, Some("kcore:tls-pw"), &tmp.join("copy")),
        digest
    );
    d.ok(&["rmi", &name]);
    let out = d.ok(&["pull", &name]);
    assert!(out.stdout.contains(&format!("Digest: {digest}\n")), "{out}");
}

/// Removes a directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
