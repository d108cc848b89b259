//! kapseld and the `kapsel` CLI as the tests drive them: a daemon on a private root, state
//! directory and socket (`/tmp/<tag>-*`), SIGTERMed when dropped; Debian's `docker-registry` on a
//! loopback port with a private configuration; and small file helpers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::env::repo_root;
use crate::{require_program, require_root, unique, Cmd, CmdOutput, Fixtures};

pub fn bin(name: &str) -> PathBuf {
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

pub fn fixture_env(key: &str) -> String {
    let f = Fixtures::get();
    let text = std::fs::read_to_string(f.dir().join("fixtures.env")).expect("fixtures.env");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("fixtures.env has no {key}"))
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A kapseld on a private root; SIGTERMed (and its log printed) when dropped.
pub struct Daemon {
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub child: Option<std::process::Child>,
    /// Flags added to every start (`--certs-dir`, `--insecure-registry`).
    pub flags: Vec<String>,
}

impl Daemon {
    pub fn start(snapshotter: &str) -> Daemon {
        Daemon::start_with(snapshotter, &[])
    }

    /// A daemon started with `flags` besides the private root, state and socket.
    pub fn start_with(snapshotter: &str, flags: &[&str]) -> Daemon {
        let mut d = Daemon::prepare("kcore");
        d.flags = flags.iter().map(|f| f.to_string()).collect();
        d.spawn(snapshotter);
        d
    }

    /// The directory (`/tmp/<tag>-<pid>-<n>`) of a daemon not started yet: a test may mount
    /// something on [`Daemon::root`] first, then [`Daemon::spawn`] it.
    pub fn prepare(tag: &str) -> Daemon {
        require_root();
        let dir = PathBuf::from(format!("/tmp/{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Daemon {
            sock: dir.join("kapseld.sock"),
            dir,
            child: None,
            flags: Vec::new(),
        }
    }

    pub fn spawn(&mut self, snapshotter: &str) {
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

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn kapsel(&self, args: &[&str]) -> Cmd {
        Cmd::new(bin("kapsel"))
            .arg("--address")
            .arg(&self.sock)
            .args(args)
            .env("KAPSEL_CONFIG", self.dir.join("client-config.json"))
            .timeout(Duration::from_secs(120))
    }

    pub fn ok(&self, args: &[&str]) -> CmdOutput {
        self.kapsel(args).ok()
    }

    pub fn blobs(&self) -> Vec<String> {
        list(&self.root().join("content/blobs/sha256"))
    }

    pub fn snapshots(&self, snapshotter: &str) -> Vec<String> {
        list(
            &self
                .root()
                .join("snapshots")
                .join(snapshotter)
                .join("snapshots"),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kapseld.log")).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
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
        // Snapshots hold mounts only while a container runs (none here); a test may have
        // mounted a small filesystem on the root.
        crate::daemon::remove_tree(&self.dir);
    }
}

pub fn list(dir: &Path) -> Vec<String> {
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
pub struct Registry {
    pub dir: PathBuf,
    pub port: u16,
    child: std::process::Child,
}

impl Registry {
    pub fn start(port: u16) -> Registry {
        Registry::start_with(port, None)
    }

    /// With `user` set, the registry wants basic auth (htpasswd, bcrypt) for that user.
    pub fn start_with(port: u16, user: Option<(&str, &str)>) -> Registry {
        Registry::start_tls(port, user, None)
    }

    /// As [`Registry::start_with`]; with `tls` set, the registry serves HTTPS only with that
    /// certificate and key, and with `tls.1` it also wants a client certificate signed by the
    /// certificate's CA.
    pub fn start_tls(
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

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The manifest digest skopeo sees for `image` (repo:tag) in this registry.
    pub fn digest(&self, image: &str) -> String {
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
pub fn sha256(data: &[u8]) -> Vec<u8> {
    let out = Cmd::new("sha256sum").stdin(data.to_vec()).ok();
    let hex = out.stdout.split_whitespace().next().unwrap().to_string();
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

pub fn sha256_file(path: &Path) -> String {
    let out = Cmd::new("sha256sum")
        .arg(path)
        .timeout(Duration::from_secs(120))
        .ok();
    format!("sha256:{}", out.stdout.split_whitespace().next().unwrap())
}

/// Moves `file` into the layout's blobs under its digest; returns (digest, size).
pub fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let d = sha256_file(file);
    let size = std::fs::metadata(file).unwrap().len();
    std::fs::rename(
        file,
        layout.join("blobs/sha256").join(&d["sha256:".len()..]),
    )
    .unwrap();
    (d, size)
}

/// A layer blob in an OCI layout being built: (digest, size, media type, diff id).
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub media_type: &'static str,
    pub diff_id: String,
}

/// Tars `tree` with GNU tar (owners numeric, xattrs kept, names sorted), gzips it when asked,
/// and moves the blob into `layout`.
pub fn tar_layer(layout: &Path, tree: &Path, gzip: bool) -> Layer {
    let tar = tree.with_extension("tar");
    Cmd::new("tar")
        .args([
            "--sort=name",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--format=pax",
            "-cf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(tree)
        .arg(".")
        .timeout(Duration::from_secs(120))
        .ok();
    let diff_id = sha256_file(&tar);
    let (blob, media_type) = if gzip {
        Cmd::new("gzip").args(["-n", "-6"]).arg(&tar).ok();
        (
            tar.with_extension("tar.gz"),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    } else {
        (tar, "application/vnd.oci.image.layer.v1.tar")
    };
    let (digest, size) = add_blob(layout, &blob);
    Layer {
        digest,
        size,
        media_type,
        diff_id,
    }
}

/// Writes config, manifest, index.json and oci-layout for `layers`; the index names the
/// image `name` (`io.containerd.image.name`). Returns (manifest digest, config digest).
pub fn write_image(layout: &Path, layers: &[Layer], name: &str) -> (String, String) {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
        "history": layers.iter().enumerate().map(|(i, _)| serde_json::json!({
            "created": "2026-01-02T03:04:05Z", "created_by": format!("kcli layer {i}"),
        })).collect::<Vec<_>>(),
    });
    let path = layout.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let (cd, cs) = add_blob(layout, &path);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest, "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let path = layout.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (md, ms) = add_blob(layout, &path);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
            },
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
    (md, cd)
}

/// A CA, a server certificate for 127.0.0.1 (IP SAN only) it signed, and a client
/// certificate it signed.
pub struct ServerCert {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl ServerCert {
    pub fn make(dir: &Path) -> ServerCert {
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
    pub fn install_ca(&self, root: &Path, host: &str) -> PathBuf {
        let d = root.join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&self.ca, d.join("ca.crt")).unwrap();
        d
    }
}

// ---- a kapseld that runs containers

/// `containerd-shim-kapsel-v2`: `KAPSEL_SHIM`, else target/release, then target/debug.
pub fn shim_binary() -> PathBuf {
    if let Some(v) = std::env::var_os("KAPSEL_SHIM") {
        let p = PathBuf::from(v);
        return if p.is_relative() {
            repo_root().join(p)
        } else {
            p
        };
    }
    for profile in ["release", "debug"] {
        let p = repo_root()
            .join("target")
            .join(profile)
            .join("containerd-shim-kapsel-v2");
        if p.is_file() {
            return p;
        }
    }
    panic!("containerd-shim-kapsel-v2 is not built: cargo build --release -p containerd-shim-kapsel-v2");
}

/// A kapseld that runs containers, under `kapsel-it-reaper --hold` (this machine's PID 1 does
/// not reap: the shims it starts outlive it, as they must, and are reaped there), on a private
/// root `/tmp/<tag>-*`; its containers are removed and it is SIGTERMed when dropped. Binaries:
/// kapseld, kapsel and kapsel-logger from [`bin`], the shim from [`shim_binary`], the runtime
/// as the other tests pick it.
pub struct Kapseld {
    pub dir: PathBuf,
    pub sock: PathBuf,
    reaper: Option<std::process::Child>,
}

impl Kapseld {
    pub fn start() -> Kapseld {
        Kapseld::start_tagged("kctr")
    }

    pub fn start_tagged(tag: &str) -> Kapseld {
        require_root();
        let dir = PathBuf::from(format!("/tmp/{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut k = Kapseld {
            sock: dir.join("kapseld.sock"),
            dir,
            reaper: None,
        };
        k.spawn();
        k
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("kapseld.log"))
            .unwrap();
        let _ = std::fs::remove_file(self.pid_file());
        let child = std::process::Command::new(bin("kapsel-it-reaper"))
            .args(["--hold", "--"])
            .arg(bin("kapseld"))
            .args(["--root", &self.dir.join("root").display().to_string()])
            .args(["--state", &self.dir.join("state").display().to_string()])
            .args(["--address", &self.sock.display().to_string()])
            .args(["--log-level", "debug"])
            .arg("--shim")
            .arg(shim_binary())
            .arg("--runtime")
            .arg(crate::env::runtime_binary())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kapseld");
        // An earlier reaper keeps reaping the shims of an earlier kapseld: let it be.
        if let Some(mut old) = self.reaper.replace(child) {
            std::thread::spawn(move || old.wait());
        }
        let sock = self.sock.clone();
        let pid = self.pid_file();
        wait_for("kapseld's socket", Duration::from_secs(30), || {
            pid.exists() && std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("state/kapseld.pid")
    }

    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(self.pid_file())
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid kapseld wrote for itself.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn kapsel(&self, args: &[&str]) -> Cmd {
        Cmd::new(bin("kapsel"))
            .arg("--address")
            .arg(&self.sock)
            .args(args)
            .timeout(Duration::from_secs(60))
    }

    pub fn ok(&self, args: &[&str]) -> CmdOutput {
        self.kapsel(args).ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kapseld.log")).unwrap_or_default()
    }

    pub fn load_busybox(&self) {
        let f = Fixtures::get();
        self.ok(&["load", "-i", &f.docker_archive().display().to_string()]);
    }

    pub fn inspect(&self, c: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", c]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v[0].clone()
    }
}

impl Drop for Kapseld {
    fn drop(&mut self) {
        // Containers first (their shims exit), then the daemon.
        let _ = self
            .kapsel(&["rm", "-f"])
            .args(
                self.kapsel(&["ps", "-aq", "--no-trunc"])
                    .output()
                    .stdout
                    .split_whitespace(),
            )
            .output();
        if self.pid_file().exists() {
            self.signal(libc::SIGTERM);
        }
        if let Some(mut r) = self.reaper.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while r.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if std::thread::panicking() {
            eprintln!("---- kapseld log ({})\n{}", self.dir.display(), self.log());
        }
        crate::daemon::remove_tree(&self.dir);
    }
}

/// busybox plus a layer with `/data/seed` (dir and file owned 1000:1000), its config declaring
/// the volumes `/data` and `/scratch`; loaded as `kgaps-vol:1`.
pub fn load_image_with_volumes(k: &Kapseld) {
    let f = Fixtures::get();
    let layout = k.dir.join("vol-layout");
    std::fs::create_dir_all(&layout).unwrap();
    Cmd::new("tar")
        .arg("-xf")
        .arg(f.oci_archive())
        .arg("-C")
        .arg(&layout)
        .ok();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let read = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blob(d)).unwrap()).unwrap()
    };
    let index = read_json(&layout.join("index.json"));
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());

    let tree = k.dir.join("vol-tree");
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(tree.join("data/seed"), "seeded\n").unwrap();
    for p in ["data", "data/seed"] {
        std::os::unix::fs::chown(tree.join(p), Some(1000), Some(1000)).unwrap();
    }
    let layer = tar_layer(&layout, &tree, false);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(layer.diff_id.clone().into());
    config["config"]["Volumes"] = serde_json::json!({"/data": {}, "/scratch": {}});
    config.as_object_mut().unwrap().remove("history");
    let path = k.dir.join("vol-config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let (cd, cs) = add_blob(&layout, &path);
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size,
        }));
    let path = k.dir.join("vol-manifest.json");
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (md, ms) = add_blob(&layout, &path);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"io.containerd.image.name": "docker.io/library/kgaps-vol:1"},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    load_layout(k, &layout);
}

/// Tars the OCI layout `layout` into an OCI archive and loads it.
/// Loads an OCI layout directory (archived first) with `kapsel load`.
pub fn load_layout(k: &Kapseld, layout: &Path) {
    let archive = layout.with_extension("tar");
    Cmd::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(layout)
        .args(["oci-layout", "index.json", "blobs"])
        .ok();
    k.ok(&["load", "-i", &archive.display().to_string()]);
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}
