//! kapsel's registry client (`kapsel_manager::registry`) against Debian's real `docker-registry`
//! (distribution 2.8), with skopeo as the other client: pull what skopeo pushed, push what
//! skopeo then reads, multi-arch indexes, uncompressed/gzip/zstd layers, basic auth and login,
//! bearer tokens, cross-repository mounts, interrupted pulls resumed.
//!
//! Each test runs its own registry (private config and storage, 127.0.0.1, a port from
//! 5301 up) and stops it at the end. Needs `docker-registry`, `skopeo`, `htpasswd`
//! (apache2-utils), `openssl`, `gzip` and `zstd`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kapsel_integration_tests::{require_program, Fixtures};
use kapsel_manager::content::local::LocalStore;
use kapsel_manager::content::Store;
use kapsel_manager::oci::{
    Descriptor, Digest, ImageConfig, Index, Manifest, Platform, MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST,
};
use kapsel_manager::registry::{
    self, auth::ConfigFile, Credentials, Progress, ProgressState, PullOptions, PushOptions,
};

// ---------------------------------------------------------------------------------------------
// A private registry

static NEXT_PORT: AtomicU16 = AtomicU16::new(5301);

fn free_port() -> u16 {
    loop {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 5400, "no free port in 5301..5400");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

struct Registry {
    _dir: tempfile::TempDir,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Registry {
    /// Starts a registry; `auth` is the YAML under `auth:` (indented by 2), if any.
    fn start(auth: &str) -> Registry {
        require_program("docker-registry", "docker-registry");
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("kreg-registry-")
                .tempdir()
                .unwrap();
            let port = free_port();
            let cfg = dir.path().join("config.yml");
            let auth = if auth.is_empty() {
                String::new()
            } else {
                format!("auth:\n{auth}")
            };
            std::fs::write(
                &cfg,
                format!(
                    "version: 0.1\nlog: {{level: debug, fields: {{service: registry}}}}\n\
                     storage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\n\
                     http:\n  addr: 127.0.0.1:{port}\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = dir.path().join("registry.log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
                .spawn()
                .expect("start docker-registry");
            let mut r = Registry {
                _dir: dir,
                port,
                child,
                log,
            };
            if r.wait_ready() {
                return r;
            }
            eprintln!("registry on port {port} did not start: {}", r.log());
        }
        panic!("docker-registry did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("HTTP/1.") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        let mut s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default());
        s
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture_env(key: &str) -> String {
    let text = std::fs::read_to_string(Fixtures::get().dir().join("fixtures.env")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in fixtures.env"))
        .to_string()
}

fn digest_env(key: &str) -> Digest {
    fixture_env(key).parse().unwrap()
}

fn new_store() -> (tempfile::TempDir, LocalStore) {
    let d = tempfile::Builder::new()
        .prefix("kreg-store-")
        .tempdir()
        .unwrap();
    let s = LocalStore::open(d.path()).unwrap();
    (d, s)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo copy` of the busybox fixture layout to `docker://HOST/REPO`.
fn skopeo_push(dest: &str, creds: Option<&str>) {
    require_program("skopeo", "skopeo");
    let src = format!(
        "oci:{}:latest",
        Fixtures::get().dir().join("busybox-oci").display()
    );
    let mut c = Command::new("skopeo");
    c.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    if let Some(cr) = creds {
        c.args(["--dest-creds", cr]);
    }
    c.args([src.as_str(), &format!("docker://{dest}")]);
    run(&mut c);
}

fn opts() -> PullOptions {
    PullOptions::default()
}

fn collect() -> (Arc<Mutex<Vec<Progress>>>, impl Fn(Progress) + Sync) {
    let v = Arc::new(Mutex::new(Vec::new()));
    let v2 = v.clone();
    (v, move |p| v2.lock().unwrap().push(p))
}

fn put(store: &dyn Store, data: &[u8], media_type: &str) -> Descriptor {
    let d = Digest::of(data);
    if store.info(&d).is_err() {
        let mut w = store.writer(&format!("test-{d}"), None).unwrap();
        w.write_all(data).unwrap();
        w.commit(Some((&d, data.len() as u64)), BTreeMap::new())
            .unwrap();
    }
    Descriptor {
        media_type: media_type.to_string(),
        digest: d,
        size: data.len() as u64,
        urls: None,
        annotations: None,
        platform: None,
    }
}

/// The fixture image (config, gzip layer, manifest) loaded into `store` from the OCI layout.
fn fixture_into(store: &dyn Store) -> (Descriptor, Manifest, ImageConfig) {
    let blobs = Fixtures::get().dir().join("busybox-oci/blobs/sha256");
    let read = |d: &Digest| std::fs::read(blobs.join(d.hex())).unwrap();
    let mdig = digest_env("MANIFEST_DIGEST");
    let mbytes = read(&mdig);
    let m: Manifest = serde_json::from_slice(&mbytes).unwrap();
    put(store, &read(&m.config.digest), &m.config.media_type);
    for l in &m.layers {
        put(store, &read(&l.digest), &l.media_type);
    }
    let cfg: ImageConfig = serde_json::from_slice(&read(&m.config.digest)).unwrap();
    (put(store, &mbytes, MEDIA_OCI_MANIFEST), m, cfg)
}

fn fixture_layer_gzip() -> Vec<u8> {
    std::fs::read(
        Fixtures::get()
            .dir()
            .join("busybox-oci/blobs/sha256")
            .join(digest_env("LAYER_DIGEST").hex()),
    )
    .unwrap()
}

fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    require_program(program, program);
    let mut c = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let input = input.to_vec();
    let t = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    c.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    t.join().unwrap().unwrap();
    assert!(c.wait().unwrap().success(), "{program} {args:?}");
    out
}

/// Builds and stores an image: `config` with its layers given as (media type, bytes).
fn image(
    store: &dyn Store,
    mut cfg: ImageConfig,
    layers: &[(&str, Vec<u8>)],
    docker: bool,
) -> Descriptor {
    let diff_ids = cfg.rootfs.diff_ids.clone();
    cfg.rootfs.diff_ids = diff_ids;
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let (cmt, mmt) = if docker {
        (MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_MANIFEST)
    } else {
        (
            "application/vnd.oci.image.config.v1+json",
            MEDIA_OCI_MANIFEST,
        )
    };
    let config = put(store, &cfg_bytes, cmt);
    let layers: Vec<Descriptor> = layers.iter().map(|(mt, b)| put(store, b, mt)).collect();
    let m = Manifest {
        schema_version: 2,
        media_type: Some(mmt.to_string()),
        config,
        layers,
        annotations: None,
    };
    put(store, &serde_json::to_vec(&m).unwrap(), mmt)
}

/// Checks every blob of a pulled image is in `store` with its digest and size.
fn check_pulled(store: &dyn Store, p: &registry::Pulled) {
    let m: Manifest = serde_json::from_slice(&store.read_all(&p.manifest.digest).unwrap()).unwrap();
    assert_eq!(m.config.digest, p.config);
    assert_eq!(m.layers, p.layers);
    for d in std::iter::once(&m.config)
        .chain(&m.layers)
        .chain([&p.target, &p.manifest])
    {
        let data = store.read_all(&d.digest).unwrap();
        assert_eq!(Digest::of(&data), d.digest);
        assert_eq!(data.len() as u64, d.size);
    }
    assert!(
        store.ingests().unwrap().is_empty(),
        "no ingest left: {:?}",
        store.ingests()
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn pulls_what_skopeo_pushed_and_pulls_again_without_downloading() {
    let reg = Registry::start("");
    let name = format!("{}/kreg/app:1", reg.host());
    skopeo_push(&name, None);
    let (_d, store) = new_store();
    let (events, progress) = collect();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o2 = order.clone();
    let mut o = opts();
    o.on_layer = Some(Arc::new(move |i, d: &Descriptor| {
        o2.lock().unwrap().push((i, d.digest.clone()));
        Ok(())
    }));
    let started = Instant::now();
    let p = registry::pull(&store, &name, &o, &progress).unwrap();
    eprintln!(
        "pull of the busybox fixture (1 MB): {:?}",
        started.elapsed()
    );
    assert_eq!(p.name, name);
    assert_eq!(
        p.target.digest,
        digest_env("MANIFEST_DIGEST"),
        "the digest skopeo pushed"
    );
    assert_eq!(p.manifest, p.target);
    assert_eq!(p.config, digest_env("CONFIG_DIGEST"));
    assert_eq!(p.layers.len(), 1);
    assert_eq!(p.layers[0].digest, digest_env("LAYER_DIGEST"));
    check_pulled(&store, &p);
    assert_eq!(
        *order.lock().unwrap(),
        vec![(0, digest_env("LAYER_DIGEST"))]
    );
    let layer_done = events.lock().unwrap().iter().any(|e| {
        e.digest == p.layers[0].digest
            && e.state == ProgressState::Done
            && e.current == p.layers[0].size
    });
    assert!(layer_done, "progress reports the layer done");
    let ev = events.lock().unwrap();
    for state in [ProgressState::Waiting, ProgressState::Done] {
        assert!(
            ev.iter()
                .any(|e| e.digest == p.target.digest && e.state == state),
            "the manifest is reported {state:?} too: {ev:?}"
        );
    }
    drop(ev);
    // The source is recorded for cross-repository mounts.
    let labels = store.info(&p.layers[0].digest).unwrap().labels;
    assert_eq!(
        labels
            .get(&format!("containerd.io/distribution.source.{}", reg.host()))
            .map(String::as_str),
        Some("kreg/app")
    );

    // Again: everything is there, nothing is downloaded.
    let (events, progress) = collect();
    let p2 = registry::pull(&store, &name, &opts(), &progress).unwrap();
    assert_eq!(p2, p);
    let ev = events.lock().unwrap();
    assert!(
        ev.iter()
            .all(|e| matches!(e.state, ProgressState::Waiting | ProgressState::Exists)),
        "{ev:?}"
    );

    // By digest, and an unknown tag / repository.
    let by_digest = format!("{}/kreg/app@{}", reg.host(), p.target.digest);
    assert_eq!(
        registry::pull(&store, &by_digest, &opts(), &|_| {})
            .unwrap()
            .target,
        p.target
    );
    let e = registry::pull(
        &store,
        &format!("{}/kreg/app:nope", reg.host()),
        &opts(),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(e, registry::Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("kreg/app:nope"), "{e}");
    let e = registry::pull(
        &store,
        &format!("{}/kreg/none:1", reg.host()),
        &opts(),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(e, registry::Error::NotFound { .. }), "{e}");
    // Nothing listens: a connection error naming the registry.
    let e = registry::pull(&store, "127.0.0.1:1/x:1", &opts(), &|_| {}).unwrap_err();
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}

#[test]
fn pushes_a_multi_arch_index_that_skopeo_reads_and_pulls_by_platform() {
    let reg = Registry::start("");
    let (_d, store) = new_store();
    let (amd, m, cfg) = fixture_into(&store);
    let mut arm_cfg = cfg.clone();
    arm_cfg.architecture = "arm64".into();
    arm_cfg.variant = Some("v8".into());
    let arm = image(
        &store,
        arm_cfg,
        &[(m.layers[0].media_type.as_str(), fixture_layer_gzip())],
        false,
    );
    let plat = |a: &str, v: Option<&str>| Platform {
        architecture: a.into(),
        os: "linux".into(),
        os_version: None,
        variant: v.map(Into::into),
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.into()),
        manifests: vec![
            Descriptor {
                platform: Some(plat("arm64", Some("v8"))),
                ..arm.clone()
            },
            Descriptor {
                platform: Some(plat("amd64", None)),
                ..amd.clone()
            },
        ],
        annotations: None,
    };
    let idx = put(
        &store,
        &serde_json::to_vec(&index).unwrap(),
        MEDIA_OCI_INDEX,
    );
    let name = format!("{}/kreg/multi:1", reg.host());
    let (events, progress) = collect();
    registry::push(&store, &idx, &name, &PushOptions::default(), &progress).unwrap();
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.digest == idx.digest && e.state == ProgressState::Done));

    // skopeo sees the same index digest and can copy every platform.
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]));
    assert_eq!(
        Digest::of(raw.as_bytes()),
        idx.digest,
        "the registry serves our index unchanged"
    );
    let out = tempfile::Builder::new()
        .prefix("kreg-skopeo-")
        .tempdir()
        .unwrap();
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:x", out.path().display()),
    ]));
    for d in [&arm.digest, &amd.digest, &idx.digest] {
        assert!(
            out.path().join("blobs/sha256").join(d.hex()).exists(),
            "skopeo copied {d}"
        );
    }

    // Pull by platform into fresh stores.
    for (platform, want) in [
        ("linux/amd64", &amd),
        ("linux/arm64", &arm),
        ("linux/arm64/v8", &arm),
    ] {
        let (_d2, s2) = new_store();
        let o = PullOptions {
            platform: registry::parse_platform(platform).unwrap(),
            ..opts()
        };
        let p = registry::pull(&s2, &name, &o, &|_| {}).unwrap();
        assert_eq!(p.target.digest, idx.digest);
        assert_eq!(p.manifest.digest, want.digest, "{platform}");
        check_pulled(&s2, &p);
        assert!(
            s2.info(&if want.digest == amd.digest {
                arm.digest.clone()
            } else {
                amd.digest.clone()
            })
            .is_err(),
            "only the chosen platform is fetched"
        );
    }
    let (_d3, s3) = new_store();
    let o = PullOptions {
        platform: registry::parse_platform("linux/s390x").unwrap(),
        ..opts()
    };
    let e = registry::pull(&s3, &name, &o, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linux/s390x") && e.contains("linux/amd64") && e.contains("linux/arm64/v8"),
        "{e}"
    );

    // The same with Docker media types: a manifest list of Docker v2 schema 2 manifests.
    let gz = fixture_layer_gzip();
    let mut arm_cfg = cfg.clone();
    arm_cfg.architecture = "arm64".into();
    let d_amd = image(
        &store,
        cfg.clone(),
        &[(MEDIA_DOCKER_LAYER_GZIP, gz.clone())],
        true,
    );
    let d_arm = image(&store, arm_cfg, &[(MEDIA_DOCKER_LAYER_GZIP, gz)], true);
    let list = Index {
        schema_version: 2,
        media_type: Some(kapsel_manager::oci::MEDIA_DOCKER_LIST.into()),
        manifests: vec![
            Descriptor {
                platform: Some(plat("arm64", None)),
                ..d_arm.clone()
            },
            Descriptor {
                platform: Some(plat("amd64", None)),
                ..d_amd.clone()
            },
        ],
        annotations: None,
    };
    let list_d = put(
        &store,
        &serde_json::to_vec(&list).unwrap(),
        kapsel_manager::oci::MEDIA_DOCKER_LIST,
    );
    let name = format!("{}/kreg/multi-docker:1", reg.host());
    registry::push(&store, &list_d, &name, &PushOptions::default(), &|_| {}).unwrap();
    for (platform, want) in [("linux/amd64", &d_amd), ("linux/arm64", &d_arm)] {
        let (_d4, s4) = new_store();
        let o = PullOptions {
            platform: registry::parse_platform(platform).unwrap(),
            ..opts()
        };
        let p = registry::pull(&s4, &name, &o, &|_| {}).unwrap();
        assert_eq!(p.target.digest, list_d.digest);
        assert_eq!(p.target.media_type, kapsel_manager::oci::MEDIA_DOCKER_LIST);
        assert_eq!(p.manifest.digest, want.digest, "{platform}");
        assert_eq!(p.manifest.media_type, MEDIA_DOCKER_MANIFEST);
        check_pulled(&s4, &p);
    }
}

#[test]
fn uncompressed_gzip_and_zstd_layers_in_oci_and_docker_manifests() {
    let reg = Registry::start("");
    let (_d, store) = new_store();
    let (_, _, cfg) = fixture_into(&store);
    let gz = fixture_layer_gzip();
    let tar = pipe("gzip", &["-dc"], &gz);
    assert_eq!(Digest::of(&tar), digest_env("DIFF_ID"));
    let zst = pipe("zstd", &["-q", "-c", "-3"], &tar);
    let cases = [
        (
            "plain",
            image(
                &store,
                cfg.clone(),
                &[(MEDIA_OCI_LAYER, tar.clone())],
                false,
            ),
        ),
        (
            "zstd",
            image(
                &store,
                cfg.clone(),
                &[(MEDIA_OCI_LAYER_ZSTD, zst.clone())],
                false,
            ),
        ),
        (
            "docker",
            image(
                &store,
                cfg.clone(),
                &[(MEDIA_DOCKER_LAYER_GZIP, gz.clone())],
                true,
            ),
        ),
    ];
    for (tag, target) in &cases {
        let name = format!("{}/kreg/layers:{tag}", reg.host());
        let o = PushOptions {
            // Chunked uploads for one of them (PATCH, then PUT with the digest).
            chunk_size: (*tag == "plain").then_some(300_000),
            ..PushOptions::default()
        };
        registry::push(&store, target, &name, &o, &|_| {}).unwrap();
        let (_d2, s2) = new_store();
        let p = registry::pull(&s2, &name, &opts(), &|_| {}).unwrap();
        assert_eq!(p.target, *target, "{tag}");
        check_pulled(&s2, &p);
        let layer = s2.read_all(&p.layers[0].digest).unwrap();
        let want = match *tag {
            "plain" => &tar,
            "zstd" => &zst,
            _ => &gz,
        };
        assert!(layer == *want, "{tag}: layer bytes as pushed");
        // skopeo reads the same manifest.
        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{name}"),
        ]));
        assert_eq!(Digest::of(raw.as_bytes()), target.digest, "{tag}");
    }
    assert!(
        reg.log().contains("PATCH"),
        "the chunked upload went through PATCH requests"
    );
}

#[test]
fn basic_auth_login_and_credentials_file() {
    require_program("htpasswd", "apache2-utils");
    let dir = tempfile::Builder::new()
        .prefix("kreg-auth-")
        .tempdir()
        .unwrap();
    let htpasswd = dir.path().join("htpasswd");
    run(Command::new("htpasswd").args(["-Bbc", htpasswd.to_str().unwrap(), "kreg", "s3cret"]));
    let reg = Registry::start(&format!(
        "  htpasswd:\n    realm: kreg-realm\n    path: {}\n",
        htpasswd.display()
    ));
    let host = reg.host();
    let name = format!("{host}/kreg/private:1");
    skopeo_push(&name, Some("kreg:s3cret"));
    let (_d, store) = new_store();

    let e = registry::pull(&store, &name, &opts(), &|_| {}).unwrap_err();
    assert!(matches!(e, registry::Error::AuthRequired { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("run kapsel login {host}")),
        "{e}"
    );

    let bad = Credentials {
        username: "kreg".into(),
        password: "wrong".into(),
    };
    let e = registry::login(&host, &bad, &[], &[]).unwrap_err();
    assert!(matches!(e, registry::Error::AuthRequired { .. }), "{e}");
    let good = Credentials {
        username: "kreg".into(),
        password: "s3cret".into(),
    };
    registry::login(&host, &good, &[], &[]).unwrap();

    // Stored like `docker login`, read back for the pull.
    let cfg_path = dir.path().join("kapsel/config.json");
    let mut f = ConfigFile::load(&cfg_path).unwrap();
    f.set(&host, &good);
    f.save().unwrap();
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(
        text.contains(&registry::auth::base64_encode(b"kreg:s3cret")),
        "{text}"
    );
    let creds = ConfigFile::load(&cfg_path).unwrap().get(&host);
    assert_eq!(creds.as_ref(), Some(&good));

    let o = PullOptions {
        credentials: creds,
        ..opts()
    };
    let p = registry::pull(&store, &name, &o, &|_| {}).unwrap();
    assert_eq!(p.target.digest, digest_env("MANIFEST_DIGEST"));
    check_pulled(&store, &p);
    let e = registry::pull(
        &store,
        &name,
        &PullOptions {
            credentials: Some(bad),
            ..opts()
        },
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(e, registry::Error::AuthRequired { .. }), "{e}");
    // Push with credentials.
    let po = PushOptions {
        credentials: Some(good),
        ..PushOptions::default()
    };
    registry::push(
        &store,
        &p.target,
        &format!("{host}/kreg/private2:1"),
        &po,
        &|_| {},
    )
    .unwrap();
}

#[test]
fn cross_repository_mount_on_push() {
    let reg = Registry::start("");
    let src = format!("{}/kreg/source:1", reg.host());
    skopeo_push(&src, None);
    let (_d, store) = new_store();
    let p = registry::pull(&store, &src, &opts(), &|_| {}).unwrap();
    let (events, progress) = collect();
    let dst = format!("{}/kreg/copy:1", reg.host());
    registry::push(&store, &p.target, &dst, &PushOptions::default(), &progress).unwrap();
    let ev = events.lock().unwrap();
    for d in std::iter::once(&p.config).chain(p.layers.iter().map(|l| &l.digest)) {
        assert!(
            ev.iter()
                .any(|e| &e.digest == d && e.state == ProgressState::Mounted),
            "{d} mounted from kreg/source (registry answered 201 to the mount POST): {ev:?}"
        );
        assert!(
            !ev.iter()
                .any(|e| &e.digest == d && e.state == ProgressState::Uploading),
            "{d} not uploaded"
        );
    }
    let log = reg.log();
    let layer = &p.layers[0].digest;
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("mount={layer}&from=kreg/source")) && l.contains(" 201 ")),
        "the registry log shows the mount answered 201:\n{log}"
    );
    // The copy is complete: a fresh pull from it works; pushing again finds everything there.
    let (_d2, s2) = new_store();
    let p2 = registry::pull(&s2, &dst, &opts(), &|_| {}).unwrap();
    assert_eq!(p2.target, p.target);
    let (events, progress) = collect();
    registry::push(&store, &p.target, &dst, &PushOptions::default(), &progress).unwrap();
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.digest == p.layers[0].digest)
        .any(|e| e.state == ProgressState::Exists));
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of the registry that logs requests and can cut a blob download.

struct Proxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    /// Cut a response to a request whose line contains this, after this many bytes.
    cut: Arc<Mutex<Option<(String, usize)>>>,
    /// Refuse (close at once) every connection from now on.
    refuse: Arc<AtomicUsize>,
    /// At the cut, stall (send nothing more, keep the connection) instead of closing.
    stall: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cut: Arc<Mutex<Option<(String, usize)>>> = Arc::new(Mutex::new(None));
        let refuse = Arc::new(AtomicUsize::new(0));
        let stall = Arc::new(AtomicUsize::new(0));
        let (rq, ct, rf, st) = (requests.clone(), cut.clone(), refuse.clone(), stall.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                if rf.load(Ordering::SeqCst) > 0 {
                    drop(client);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (rq, ct, st) = (rq.clone(), ct.clone(), st.clone());
                // The current request's first line, shared by both directions.
                let current = Arc::new(Mutex::new(String::new()));
                let cur2 = current.clone();
                let (c2, u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    // client → registry, logging request heads.
                    let mut r = BufReader::new(c2);
                    let mut up = u2;
                    let mut at_head = true;
                    let mut body_left = 0usize;
                    loop {
                        if body_left > 0 {
                            let mut buf = vec![0u8; body_left.min(65536)];
                            let Ok(n) = r.read(&mut buf) else { break };
                            if n == 0 || up.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            body_left -= n;
                            continue;
                        }
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        if at_head {
                            *cur2.lock().unwrap() = line.trim().to_string();
                            at_head = false;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            body_left = v.trim().parse().unwrap_or(0);
                        }
                        if line.to_ascii_lowercase().starts_with("range:") {
                            let cur = cur2.lock().unwrap().clone();
                            rq.lock().unwrap().push(format!("{cur} {}", line.trim()));
                        }
                        if line == "\r\n" {
                            let cur = cur2.lock().unwrap().clone();
                            rq.lock().unwrap().push(cur);
                            at_head = true;
                        }
                        if up.write_all(line.as_bytes()).is_err() {
                            break;
                        }
                    }
                    let _ = up.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    // registry → client, cutting when asked.
                    let mut up = up;
                    let mut client = client;
                    let mut sent_for_cut = 0usize;
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = up.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let cur = current.lock().unwrap().clone();
                        let rule = ct.lock().unwrap().clone();
                        if let Some((pat, limit)) = rule {
                            if cur.contains(&pat) {
                                if sent_for_cut + n >= limit {
                                    let keep = limit.saturating_sub(sent_for_cut);
                                    let _ = client.write_all(&buf[..keep]);
                                    *ct.lock().unwrap() = None;
                                    if st.load(Ordering::SeqCst) > 0 {
                                        std::thread::sleep(Duration::from_secs(60));
                                    }
                                    let _ = client.shutdown(Shutdown::Both);
                                    let _ = up.shutdown(Shutdown::Both);
                                    return;
                                }
                                sent_for_cut += n;
                            }
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(Shutdown::Both);
                });
            }
        });
        Proxy {
            port,
            requests,
            cut,
            refuse,
            stall,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

#[test]
fn interrupted_pull_resumes_without_downloading_again() {
    let reg = Registry::start("");
    skopeo_push(&format!("{}/kreg/resume:1", reg.host()), None);
    let layer = digest_env("LAYER_DIGEST");
    let config = digest_env("CONFIG_DIGEST");

    // 1. The connection drops in the middle of the layer: the client resumes by itself with a
    //    Range request on a new connection.
    let proxy = Proxy::start(reg.port);
    *proxy.cut.lock().unwrap() = Some((format!("/blobs/{layer}"), 400_000));
    let name = format!("{}/kreg/resume:1", proxy.host());
    let (_d, store) = new_store();
    let p = registry::pull(&store, &name, &opts(), &|_| {}).unwrap();
    check_pulled(&store, &p);
    let reqs = proxy.requests();
    let ranged: Vec<&String> = reqs
        .iter()
        .filter(|r| r.contains(&format!("/blobs/{layer}")) && r.contains("Range: bytes="))
        .collect();
    assert_eq!(ranged.len(), 1, "one resumed request: {reqs:#?}");
    let from: u64 = ranged[0]
        .rsplit("bytes=")
        .next()
        .unwrap()
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 100_000 && from <= 400_000, "resumed from {from}");

    // 2. The pull fails (the registry becomes unreachable mid-layer, retries exhausted); the
    //    config is committed and the layer's ingest kept. The next pull asks only for the rest.
    let proxy = Proxy::start(reg.port);
    let name = format!("{}/kreg/resume:1", proxy.host());
    let (_d2, s2) = new_store();
    *proxy.cut.lock().unwrap() = Some((format!("/blobs/{layer}"), 300_000));
    let cut = proxy.cut.clone();
    let refuse = proxy.refuse.clone();
    // Once the cut happened, refuse every new connection.
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while cut.lock().unwrap().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        refuse.store(1, Ordering::SeqCst);
    });
    let o = PullOptions {
        parallel: 1,
        ..opts()
    };
    let e = registry::pull(&s2, &name, &o, &|_| {}).unwrap_err();
    watcher.join().unwrap();
    assert!(matches!(e, registry::Error::Connection { .. }), "{e}");
    s2.info(&config)
        .expect("the config was committed before the failure");
    assert!(s2.info(&layer).is_err(), "no partial layer visible");
    let ing = s2.ingests().unwrap();
    assert_eq!(ing.len(), 1, "{ing:?}");
    let kept = ing[0].offset;
    assert!(kept > 0 && kept <= 300_000, "{kept}");

    let proxy = Proxy::start(reg.port);
    let name = format!("{}/kreg/resume:1", proxy.host());
    let p = registry::pull(&s2, &name, &o, &|_| {}).unwrap();
    check_pulled(&s2, &p);
    let reqs = proxy.requests();
    assert!(
        !reqs.iter().any(|r| r.contains(&format!("/blobs/{config}"))),
        "config not fetched again: {reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.contains(&format!("/blobs/{layer}"))
            && r.contains(&format!("Range: bytes={kept}-"))),
        "layer resumed at {kept}: {reqs:#?}"
    );
}

#[test]
fn bearer_token_auth_with_a_token_server() {
    let ts = token::Server::start();
    let reg = Registry::start(&format!(
        "  token:\n    realm: http://127.0.0.1:{}/token\n    service: kreg-registry\n    issuer: kreg-issuer\n    rootcertbundle: {}\n",
        ts.port,
        ts.cert.display()
    ));
    let host = reg.host();
    let (_d, store) = new_store();
    let (manifest, _, _) = fixture_into(&store);
    let good = Credentials {
        username: "kreg".into(),
        password: "tokenpw".into(),
    };

    // Anonymous: the token server gives pull-only tokens to nobody: refused.
    let e = registry::push(
        &store,
        &manifest,
        &format!("{host}/kreg/tok:1"),
        &PushOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(e, registry::Error::AuthRequired { .. }), "{e}");

    let po = PushOptions {
        credentials: Some(good.clone()),
        ..PushOptions::default()
    };
    registry::push(
        &store,
        &manifest,
        &format!("{host}/kreg/tok:1"),
        &po,
        &|_| {},
    )
    .unwrap();
    registry::login(&host, &good, &[], &[]).unwrap();
    let bad = Credentials {
        username: "kreg".into(),
        password: "nope".into(),
    };
    assert!(registry::login(&host, &bad, &[], &[]).is_err());

    let (_d2, s2) = new_store();
    let o = PullOptions {
        credentials: Some(good),
        ..opts()
    };
    let p = registry::pull(&s2, &format!("{host}/kreg/tok:1"), &o, &|_| {}).unwrap();
    assert_eq!(p.target.digest, manifest.digest);
    check_pulled(&s2, &p);
    let issued = ts.issued.lock().unwrap().clone();
    assert!(
        issued
            .iter()
            .any(|s| s.contains("repository:kreg/tok:pull,push")),
        "{issued:?}"
    );
    assert!(
        issued
            .iter()
            .any(|s| s.contains("repository:kreg/tok:pull")),
        "{issued:?}"
    );
}

/// A token server for distribution's `auth: token`: JWTs signed RS256 with a self-signed
/// certificate the registry trusts (`rootcertbundle`), carried in the `x5c` header. Signing is
/// done by the `openssl` command.
mod token {
    use super::*;

    pub struct Server {
        pub port: u16,
        pub cert: PathBuf,
        pub issued: Arc<Mutex<Vec<String>>>,
        _dir: tempfile::TempDir,
    }

    fn b64url(data: &[u8]) -> String {
        registry::auth::base64_encode(data)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    }

    fn url_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            } else if b[i] == b'+' {
                out.push(b' ');
                i += 1;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    impl Server {
        pub fn start() -> Server {
            require_program("openssl", "openssl");
            let dir = tempfile::Builder::new()
                .prefix("kreg-token-")
                .tempdir()
                .unwrap();
            let key = dir.path().join("key.pem");
            let cert = dir.path().join("cert.pem");
            run(Command::new("openssl").args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kreg-token",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ]));
            let der = run(Command::new("sh").args([
                "-c",
                &format!(
                    "openssl x509 -in {} -outform DER | base64 -w0",
                    cert.display()
                ),
            ]));
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let issued = Arc::new(Mutex::new(Vec::new()));
            let iss = issued.clone();
            let keyp = key.clone();
            std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(s) = s else { return };
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut first = String::new();
                    let _ = r.read_line(&mut first);
                    let mut auth = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("Authorization: ") {
                            auth = v.trim().to_string();
                        }
                    }
                    let path = first.split(' ').nth(1).unwrap_or("").to_string();
                    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
                    let scopes: Vec<String> = query
                        .split('&')
                        .filter_map(|kv| kv.strip_prefix("scope="))
                        .map(url_decode)
                        .collect();
                    let user_ok =
                        auth == format!("Basic {}", registry::auth::base64_encode(b"kreg:tokenpw"));
                    let reply = if !auth.is_empty() && !user_ok {
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    } else {
                        let access: Vec<serde_json::Value> = scopes
                            .iter()
                            .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
                            .filter_map(|s| {
                                let mut it = s.splitn(3, ':');
                                let (t, n, a) = (it.next()?, it.next()?, it.next()?);
                                // Anonymous users get nothing; "kreg" gets what it asks.
                                let actions: Vec<&str> = if user_ok {
                                    a.split(',').collect()
                                } else {
                                    vec![]
                                };
                                Some(serde_json::json!({"type": t, "name": n, "actions": actions}))
                            })
                            .collect();
                        iss.lock().unwrap().push(scopes.join(" "));
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let header =
                            serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [der.trim()]});
                        let claims = serde_json::json!({
                            "iss": "kreg-issuer", "sub": if user_ok { "kreg" } else { "" },
                            "aud": "kreg-registry", "exp": now + 300, "nbf": now - 10, "iat": now,
                            "jti": format!("{now}-{}", scopes.len()), "access": access,
                        });
                        let signing = format!(
                            "{}.{}",
                            b64url(header.to_string().as_bytes()),
                            b64url(claims.to_string().as_bytes())
                        );
                        let sig = sign(&keyp, signing.as_bytes());
                        let jwt = format!("{signing}.{}", b64url(&sig));
                        let body = serde_json::json!({"token": jwt, "expires_in": 300}).to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = (&s).write_all(reply.as_bytes());
                }
            });
            Server {
                port,
                cert,
                issued,
                _dir: dir,
            }
        }
    }

    fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
        let mut c = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign", key.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(data).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    }
}

// ---------------------------------------------------------------------------------------------
// Archives (`kapsel_manager::archive`) against skopeo and dockerd 20.10: what they write is
// imported, what kapsel exports they read, with the same config and manifest digests.

mod archives {
    use super::*;
    use kapsel_integration_tests::clients::Dockerd;
    use kapsel_integration_tests::env::require_root;
    use kapsel_manager::archive::{self, Format};

    /// Imports the fixture and adds a second image (own config, same layer).
    fn two_images(store: &dyn Store) -> Vec<(String, Descriptor)> {
        let f = std::fs::File::open(Fixtures::get().oci_archive()).unwrap();
        let imgs = archive::import(store, f, &|_| {}).unwrap();
        let bb = imgs[0].target.clone();
        let m: Manifest = serde_json::from_slice(&store.read_all(&bb.digest).unwrap()).unwrap();
        let mut cfg: ImageConfig =
            serde_json::from_slice(&store.read_all(&m.config.digest).unwrap()).unwrap();
        cfg.author = Some("kreg".into());
        let other = image(
            store,
            cfg,
            &[(m.layers[0].media_type.as_str(), fixture_layer_gzip())],
            false,
        );
        vec![
            ("docker.io/kreg/exported:1".to_string(), bb),
            ("docker.io/kreg/other:2".to_string(), other),
        ]
    }

    fn config_of(store: &dyn Store, d: &Descriptor) -> Digest {
        let m: Manifest = serde_json::from_slice(&store.read_all(&d.digest).unwrap()).unwrap();
        m.config.digest
    }

    #[test]
    fn skopeo_reads_both_export_formats() {
        require_program("skopeo", "skopeo");
        let (_d, store) = new_store();
        let images = two_images(&store);
        let dir = tempfile::Builder::new()
            .prefix("kreg-arch-")
            .tempdir()
            .unwrap();
        for (format, transport) in [
            (Format::DockerArchive, "docker-archive"),
            (Format::OciLayout, "oci-archive"),
        ] {
            let path = dir.path().join(format!("{transport}.tar"));
            archive::export(
                &store,
                &images,
                std::fs::File::create(&path).unwrap(),
                format,
            )
            .unwrap();
            for (i, (name, target)) in images.iter().enumerate() {
                // docker-archive images are addressed by index (@N), OCI ones by ref.name.
                let src = match format {
                    Format::DockerArchive => format!("{transport}:{}:@{i}", path.display()),
                    Format::OciLayout => format!(
                        "{transport}:{}:{}",
                        path.display(),
                        name.rsplit(':').next().unwrap()
                    ),
                };
                let raw = run(Command::new("skopeo").args(["inspect", "--config", "--raw", &src]));
                assert_eq!(
                    Digest::of(raw.as_bytes()),
                    config_of(&store, target),
                    "{src}: the config skopeo reads is ours"
                );
                if format == Format::OciLayout {
                    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &src]));
                    assert_eq!(Digest::of(raw.as_bytes()), target.digest, "{src}");
                }
                let out = dir.path().join(format!("copy-{transport}-{i}"));
                run(Command::new("skopeo").args([
                    "--insecure-policy",
                    "copy",
                    &src,
                    &format!("oci:{}:x", out.display()),
                ]));
            }
        }
        // What skopeo writes from our OCI export imports back with the same digests.
        let copy = dir.path().join("skopeo-docker.tar");
        run(Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            &format!(
                "oci-archive:{}:1",
                dir.path().join("oci-archive.tar").display()
            ),
            &format!("docker-archive:{}:kreg/fromskopeo:9", copy.display()),
        ]));
        let (_d2, s2) = new_store();
        let back = archive::import(&s2, std::fs::File::open(&copy).unwrap(), &|_| {}).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].name.as_deref(), Some("docker.io/kreg/fromskopeo:9"));
        assert_eq!(
            config_of(&s2, &back[0].target),
            config_of(&store, &images[0].1)
        );
    }

    /// podman and containerd load both export formats; the images keep our digests.
    #[test]
    fn podman_and_containerd_load_our_exports() {
        use kapsel_integration_tests::clients::{Containerd, Podman};
        require_root();
        let (_d, store) = new_store();
        let images = two_images(&store);
        let dir = tempfile::Builder::new()
            .prefix("kreg-load-")
            .tempdir()
            .unwrap();
        let paths: Vec<(Format, PathBuf)> = [Format::DockerArchive, Format::OciLayout]
            .into_iter()
            .map(|f| {
                let p = dir.path().join(format!("{f:?}.tar"));
                archive::export(&store, &images, std::fs::File::create(&p).unwrap(), f).unwrap();
                (f, p)
            })
            .collect();

        let podman = Podman::new(Path::new("/usr/bin/crun"), &Fixtures::get().oci_archive());
        // podman 4.3 loads one image per OCI archive ("more than one image in oci, choose an
        // image"): the OCI case exports the second image alone.
        let single = dir.path().join("single-oci.tar");
        archive::export(
            &store,
            &images[1..],
            std::fs::File::create(&single).unwrap(),
            Format::OciLayout,
        )
        .unwrap();
        for (f, p, imgs) in [
            (Format::DockerArchive, &paths[0].1, &images[..]),
            (Format::OciLayout, &single, &images[1..]),
        ] {
            podman.cmd(&["rmi", "-af"]).output();
            let out = podman.cmd(&["load", "-i", p.to_str().unwrap()]).ok();
            for (name, target) in imgs {
                assert!(out.stdout.contains(name.as_str()), "{f:?}: {}", out.stdout);
                let id = podman
                    .cmd(&["image", "inspect", "--format", "{{.Id}}", name])
                    .ok()
                    .stdout;
                assert_eq!(
                    format!("sha256:{}", id.trim()),
                    config_of(&store, target).as_str(),
                    "{f:?}: podman's image id of {name} is our config digest"
                );
            }
        }
        drop(podman);

        let mut ctrd = Containerd::start();
        for (f, p) in &paths {
            ctrd.ctr(&["image", "import", "--all-platforms", p.to_str().unwrap()])
                .timeout(Duration::from_secs(120))
                .ok();
            let ls = ctrd.ctr(&["image", "ls"]).ok().stdout;
            for (name, target) in &images {
                let line = ls
                    .lines()
                    .find(|l| l.starts_with(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{f:?}: ctr has no {name}:\n{ls}"));
                if *f == Format::OciLayout {
                    assert!(line.contains(target.digest.as_str()), "{f:?}: {line}");
                }
            }
            ctrd.ctr(&["image", "rm", &images[0].0, &images[1].0]).ok();
        }
        ctrd.stop();
    }

    #[test]
    fn docker_loads_our_export_and_we_load_docker_save() {
        require_root();
        let (_d, store) = new_store();
        let images = two_images(&store);
        let dir = tempfile::Builder::new()
            .prefix("kreg-docker-")
            .tempdir()
            .unwrap();
        let ours = dir.path().join("ours.tar");
        archive::export(
            &store,
            &images,
            std::fs::File::create(&ours).unwrap(),
            Format::DockerArchive,
        )
        .unwrap();
        let mut docker = Dockerd::start(
            Path::new("/usr/sbin/runc"),
            &Fixtures::get().docker_archive(),
        );
        let out = docker.docker(&["load", "-i", ours.to_str().unwrap()]).ok();
        assert!(
            out.stdout.contains("kreg/exported:1"),
            "{}",
            out.all_output()
        );
        for (name, target) in &images {
            let short = name.trim_start_matches("docker.io/");
            let id = docker
                .docker(&["image", "inspect", "--format", "{{.Id}}", short])
                .ok()
                .stdout;
            assert_eq!(
                id.trim(),
                config_of(&store, target).as_str(),
                "{short}: docker's image id is our config digest"
            );
        }
        let run_out = docker
            .docker(&[
                "run",
                "--rm",
                "--network",
                "none",
                "kreg/other:2",
                "echo",
                "from-kapsel-export",
            ])
            .ok();
        assert!(
            run_out.stdout.contains("from-kapsel-export"),
            "{}",
            run_out.all_output()
        );

        // docker save (both images and the fixture) imports into kapsel.
        let saved = dir.path().join("saved.tar");
        docker
            .docker(&[
                "save",
                "-o",
                saved.to_str().unwrap(),
                "kreg/exported:1",
                "kreg/other:2",
                "busybox:latest",
            ])
            .ok();
        docker.stop();
        let (_d2, s2) = new_store();
        let back = archive::import(&s2, std::fs::File::open(&saved).unwrap(), &|_| {}).unwrap();
        let mut names: Vec<String> = back.iter().filter_map(|i| i.name.clone()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "docker.io/kreg/exported:1",
                "docker.io/kreg/other:2",
                "docker.io/library/busybox:latest"
            ]
        );
        for img in &back {
            let want = match img.name.as_deref() {
                Some("docker.io/kreg/other:2") => config_of(&store, &images[1].1),
                _ => config_of(&store, &images[0].1),
            };
            assert_eq!(config_of(&s2, &img.target), want, "{:?}", img.name);
            let m: Manifest =
                serde_json::from_slice(&s2.read_all(&img.target.digest).unwrap()).unwrap();
            assert_eq!(m.layers[0].digest, digest_env("DIFF_ID"));
        }
    }
}

/// Pull and push throughput of 3 × 32 MiB layers through the local registry, beside skopeo
/// copying the same image in the same run. Prints the figures; checks the blobs.
#[test]
fn throughput_beside_skopeo() {
    let reg = Registry::start("");
    let (_d, store) = new_store();
    let (_, _, mut cfg) = fixture_into(&store);
    let mut layers = Vec::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..3 {
        // Incompressible bytes (xorshift), stored as gzip layers: the registry does not look.
        let mut b = vec![0u8; 32 << 20];
        for chunk in b.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        layers.push(("application/vnd.oci.image.layer.v1.tar+gzip", b));
    }
    cfg.rootfs.diff_ids = layers.iter().map(|(_, b)| Digest::of(b)).collect();
    let target = image(&store, cfg, &layers, false);
    let total: usize = layers.iter().map(|(_, b)| b.len()).sum();
    let mib = total as f64 / (1 << 20) as f64;
    let name = format!("{}/kreg/big:1", reg.host());

    let t = Instant::now();
    registry::push(&store, &target, &name, &PushOptions::default(), &|_| {}).unwrap();
    let push = t.elapsed().as_secs_f64();

    let (_d2, s2) = new_store();
    // The layer hook sees each layer once, in order, already in the store.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen2, store2) = (
        seen.clone(),
        Arc::new(LocalStore::open(_d2.path()).unwrap()),
    );
    let o = PullOptions {
        on_layer: Some(Arc::new(move |i, d: &Descriptor| {
            store2.info(&d.digest).map_err(|e| e.to_string())?;
            seen2.lock().unwrap().push(i);
            Ok(())
        })),
        ..opts()
    };
    let t = Instant::now();
    let p = registry::pull(&s2, &name, &o, &|_| {}).unwrap();
    let pull = t.elapsed().as_secs_f64();
    check_pulled(&s2, &p);
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);

    let out = tempfile::Builder::new()
        .prefix("kreg-skopeo-")
        .tempdir()
        .unwrap();
    let t = Instant::now();
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:x", out.path().display()),
    ]));
    let skopeo = t.elapsed().as_secs_f64();
    eprintln!(
        "{mib:.0} MiB in 3 layers: kapsel push {push:.2}s ({:.0} MiB/s); \
         kapsel pull {pull:.2}s ({:.0} MiB/s), skopeo pull {skopeo:.2}s ({:.0} MiB/s)",
        mib / push,
        mib / pull,
        mib / skopeo
    );
}

/// containerd 1.6's `ctr` pulls (and unpacks) what kapsel pushed, an index with zstd and gzip
/// manifests; kapsel pulls what `ctr push` pushed. Digests identical both ways.
#[test]
fn containerd_pulls_what_we_push_and_we_pull_what_it_pushes() {
    use kapsel_integration_tests::clients::Containerd;
    let reg = Registry::start("");
    let (_d, store) = new_store();
    let (amd, _, cfg) = fixture_into(&store);
    let tar = pipe("gzip", &["-dc"], &fixture_layer_gzip());
    let zst = pipe("zstd", &["-q", "-c"], &tar);
    let zimg = image(&store, cfg.clone(), &[(MEDIA_OCI_LAYER_ZSTD, zst)], false);
    let name_z = format!("{}/kreg/ctr-zstd:1", reg.host());
    registry::push(&store, &zimg, &name_z, &PushOptions::default(), &|_| {}).unwrap();
    let name_g = format!("{}/kreg/ctr-gzip:1", reg.host());
    registry::push(&store, &amd, &name_g, &PushOptions::default(), &|_| {}).unwrap();

    let mut ctrd = Containerd::start();
    for (name, digest) in [(&name_z, &zimg.digest), (&name_g, &amd.digest)] {
        ctrd.ctr(&["image", "pull", "--plain-http", name])
            .timeout(Duration::from_secs(120))
            .ok();
        let ls = ctrd.ctr(&["image", "ls"]).ok().stdout;
        let line = ls
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("{ls}"));
        assert!(
            line.contains(digest.as_str()),
            "ctr has {name} at {digest}: {line}"
        );
        // Unpacked: a snapshot exists for the image's chain.
        let check = ctrd.ctr(&["image", "check"]).ok().stdout;
        assert!(
            check
                .lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains("complete")),
            "{check}"
        );
    }

    // ctr push → kapsel pull.
    ctrd.import(&Fixtures::get().oci_archive());
    let dest = format!("{}/kreg/from-ctr:1", reg.host());
    ctrd.ctr(&[
        "image",
        "push",
        "--plain-http",
        &dest,
        "docker.io/library/busybox:latest",
    ])
    .timeout(Duration::from_secs(120))
    .ok();
    ctrd.stop();
    let (_d2, s2) = new_store();
    let p = registry::pull(&s2, &dest, &opts(), &|_| {}).unwrap();
    assert_eq!(p.manifest.digest, digest_env("MANIFEST_DIGEST"));
    check_pulled(&s2, &p);
}

/// The child side of `sigkill_in_the_middle_of_a_pull` (run by it with `--ignored --exact`):
/// pulls `$KREG_CHILD_REF` into the store at `$KREG_CHILD_STORE` and is killed meanwhile.
#[test]
#[ignore = "run as a child process by sigkill_in_the_middle_of_a_pull"]
fn sigkill_child_helper() {
    let (Some(dir), Some(name)) = (
        std::env::var_os("KREG_CHILD_STORE"),
        std::env::var_os("KREG_CHILD_REF"),
    ) else {
        panic!("set KREG_CHILD_STORE and KREG_CHILD_REF (sigkill_in_the_middle_of_a_pull does)");
    };
    let store = LocalStore::open(Path::new(&dir)).unwrap();
    let _ = registry::pull(&store, name.to_str().unwrap(), &opts(), &|_| {});
    panic!("the pull was meant to be killed before it ended");
}

/// A process pulling is SIGKILLed in the middle of a layer: no blob is visible for it, the
/// ingest keeps what arrived, and the next pull (another process) resumes from there.
#[test]
fn sigkill_in_the_middle_of_a_pull() {
    let reg = Registry::start("");
    skopeo_push(&format!("{}/kreg/killed:1", reg.host()), None);
    let layer = digest_env("LAYER_DIGEST");
    let proxy = Proxy::start(reg.port);
    proxy.stall.store(1, Ordering::SeqCst);
    *proxy.cut.lock().unwrap() = Some((format!("/blobs/{layer}"), 500_000));
    let (dir, store) = new_store();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "sigkill_child_helper",
            "--nocapture",
        ])
        .env("KREG_CHILD_STORE", dir.path())
        .env("KREG_CHILD_REF", format!("{}/kreg/killed:1", proxy.host()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ing = store.ingests().unwrap();
        if ing
            .iter()
            .any(|i| i.expected.as_ref() == Some(&layer) && i.offset >= 400_000)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child never got 400 kB of the layer: {ing:?}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert!(
        store.info(&layer).is_err(),
        "no partial layer under its digest"
    );
    // The layer's ingest keeps what arrived (the config may be unfinished too).
    let ing = store.ingests().unwrap();
    let kept = ing
        .iter()
        .find(|i| i.expected.as_ref() == Some(&layer))
        .unwrap_or_else(|| panic!("{ing:?}"))
        .offset;
    assert!((400_000..=500_000).contains(&kept), "{kept}");
    for i in store.list().unwrap() {
        let data = store.read_all(&i.digest).unwrap();
        assert_eq!(Digest::of(&data), i.digest, "every visible blob is whole");
    }

    let proxy = Proxy::start(reg.port);
    let p = registry::pull(
        &store,
        &format!("{}/kreg/killed:1", proxy.host()),
        &opts(),
        &|_| {},
    )
    .unwrap();
    check_pulled(&store, &p);
    let reqs = proxy.requests();
    assert!(
        reqs.iter().any(|r| r.contains(&format!("/blobs/{layer}"))
            && r.contains(&format!("Range: bytes={kept}-"))),
        "resumed at {kept}: {reqs:#?}"
    );
}
