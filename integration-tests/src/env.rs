//! Where things are: the runtime binary under test, the fixtures, the repository.
//!
//! - `KAPSEL_RUNTIME`: the runc-compatible binary to test (default
//!   `<repo>/target/release/kapsel-runtime`, then `<repo>/target/debug/kapsel-runtime`).
//!   A relative path is taken relative to the repository root.
//! - `KAPSEL_FIXTURES`: the folder `scripts/make-fixtures.sh` filled (default `<repo>/.fixtures`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Real runc, the reference every shared expectation is validated against.
pub const RUNC: &str = "/usr/sbin/runc";

/// Panics unless the tests run as root: they create namespaces, mounts and cgroups.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the kapsel integration tests must run as root (euid is {euid}): they create namespaces, \
         mounts and cgroups; run them with sudo or from scripts/test.sh"
    );
}

/// The repository (workspace) root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives inside the workspace")
        .to_path_buf()
}

/// The runtime binary the tests drive (see the module docs).
#[track_caller]
pub fn runtime_binary() -> PathBuf {
    if let Some(value) = std::env::var_os("KAPSEL_RUNTIME") {
        let mut path = PathBuf::from(&value);
        if path.is_relative() {
            path = repo_root().join(path);
        }
        assert!(
            is_executable(&path),
            "KAPSEL_RUNTIME={} is not an executable file",
            path.display()
        );
        return path;
    }
    let root = repo_root();
    for profile in ["release", "debug"] {
        let path = root.join("target").join(profile).join("kapsel-runtime");
        if is_executable(&path) {
            return path;
        }
    }
    panic!(
        "no runtime to test: build one (cargo build --release -p kapsel-runtime) or set \
         KAPSEL_RUNTIME to a runc-compatible binary (e.g. KAPSEL_RUNTIME={RUNC})"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The fixtures built by `scripts/make-fixtures.sh`.
#[derive(Debug, Clone)]
pub struct Fixtures {
    dir: PathBuf,
}

impl Fixtures {
    /// Finds the fixtures; panics with what to do when they are missing.
    #[track_caller]
    pub fn get() -> Fixtures {
        let (dir, from) = match std::env::var_os("KAPSEL_FIXTURES") {
            Some(v) => {
                let mut p = PathBuf::from(v);
                if p.is_relative() {
                    p = repo_root().join(p);
                }
                (p, "KAPSEL_FIXTURES")
            }
            None => (repo_root().join(".fixtures"), "the default location"),
        };
        let busybox = dir.join("rootfs/bin/busybox");
        assert!(
            busybox.is_file(),
            "fixtures missing: {} (from {from}) has no rootfs/bin/busybox; build them with \
             `scripts/make-fixtures.sh {}` or point KAPSEL_FIXTURES at a folder that has them",
            dir.display(),
            dir.display()
        );
        // runc refuses a root.path with a symlink in it, and a worktree's .fixtures is one.
        let dir = dir.canonicalize().unwrap_or(dir);
        Fixtures { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The busybox root filesystem (shared by tests: mount it read-only, never write to it).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The OCI archive (`ctr image import`, `podman load`).
    #[track_caller]
    pub fn oci_archive(&self) -> PathBuf {
        self.file("busybox-oci.tar")
    }

    /// The docker-archive (`docker load`).
    #[track_caller]
    pub fn docker_archive(&self) -> PathBuf {
        self.file("busybox-docker.tar")
    }

    #[track_caller]
    fn file(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        assert!(
            p.is_file(),
            "fixture {} is missing: run `scripts/make-fixtures.sh {}`",
            p.display(),
            self.dir.display()
        );
        p
    }
}

/// A name unique to this process and call: `<tag>-<pid>-<n>`. Container ids,
/// cgroup paths and netns names are built from it so that tests running in
/// parallel, or two test binaries at once, never collide.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

/// Is `program` on PATH (or an existing absolute path)?
pub fn have_program(program: &str) -> bool {
    if program.contains('/') {
        return is_executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(program))))
        .unwrap_or(false)
}

/// Panics unless `program` exists: a missing client must fail the test, not skip it.
#[track_caller]
pub fn require_program(program: &str, package: &str) {
    assert!(
        have_program(program),
        "{program} is not installed: apt-get install {package} (scripts/install-deps.sh installs it)"
    );
}

/// `helpers/sysprobe.c` (raw syscalls from inside a container), built static with gcc once per
/// test process into `target/tmp`.
#[track_caller]
pub fn sysprobe() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        require_program("gcc", "gcc libc6-dev");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/sysprobe.c");
        let dir = repo_root().join("target/tmp");
        std::fs::create_dir_all(&dir).expect("create target/tmp");
        let out = dir.join(format!("sysprobe-{}", std::process::id()));
        crate::Cmd::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .ok();
        out
    })
}
