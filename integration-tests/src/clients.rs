//! Real clients driving the runtime binary: an isolated containerd 1.6 (with
//! `ctr`), reached through the runc shim with `--runc-binary`.
//!
//! containerd 1.6 hard-codes `/run/containerd/{s,fifo}` (shim sockets, ctr's
//! stdio fifos) and the runc shim's default runtime root
//! `/run/containerd/runc/<namespace>`. The tests use a namespace of their own
//! (`kt-<pid>`) and pass `--runc-root` inside their temp dir, so nothing of
//! another containerd on the machine is touched, and nothing is left in /run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::command::{Cmd, CmdOutput};
use crate::daemon::{
    kill_processes_mentioning, remove_cgroup_tree, remove_tree, spawn_daemon, stop_child,
};
use crate::env::{require_program, require_root, unique};
use crate::host::wait_until;

/// The image `scripts/make-fixtures.sh` puts in busybox-oci.tar.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";

/// A containerd started for the tests, with its own root, state, socket and namespace.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    sock: PathBuf,
    namespace: String,
    child: Option<Child>,
}

impl Containerd {
    /// Start it and wait until it answers `ctr version`.
    #[track_caller]
    pub fn start() -> Containerd {
        require_root();
        require_program("containerd", "containerd");
        require_program("ctr", "containerd");
        let dir = tempfile::Builder::new()
            .prefix("kapsel-it-containerd-")
            .tempdir()
            .expect("containerd temp dir")
            .keep();
        let sock = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{opt}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = sock.display(),
            opt = dir.join("opt").display(),
        );
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).expect("write containerd config");
        let child = spawn_daemon(
            "containerd",
            &["--config", config_path.to_str().unwrap()],
            &dir.join("containerd.log"),
        );
        let mut c = Containerd {
            namespace: unique("kt"),
            dir,
            sock,
            child: Some(child),
        };
        let up = wait_until(Duration::from_secs(30), || {
            c.sock.exists() && c.ctr(&["version"]).output().success()
        });
        if !up {
            let log = c.log();
            c.stop();
            panic!("containerd did not come up within 30 s; its log:\n{log}");
        }
        c
    }

    pub fn socket(&self) -> &Path {
        &self.sock
    }

    /// The bundle directory containerd made for task `id` (runtime v2: `address`, `shim.pid`,
    /// `config.json`, `rootfs`).
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    /// Stop containerd (SIGTERM; shims and their containers keep running, as on a real
    /// restart) and start it again on the same config, root and state.
    #[track_caller]
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
        let config = self.dir.join("config.toml");
        self.child = Some(spawn_daemon(
            "containerd",
            &["--config", config.to_str().unwrap()],
            &self.dir.join("containerd-restarted.log"),
        ));
        let up = wait_until(Duration::from_secs(30), || {
            self.ctr(&["version"]).output().success()
        });
        assert!(
            up,
            "containerd did not come back within 30 s; its log:\n{}",
            self.log()
        );
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The runtime root the tests pass with `--runc-root`; the runc shim
    /// appends the namespace, so the runtime's `--root` is `<this>/<namespace>`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc-root")
    }

    /// `ctr -a SOCK -n NAMESPACE ARGS...`, not yet run.
    pub fn ctr(&self, args: &[&str]) -> Cmd {
        Cmd::new("ctr")
            .arg("-a")
            .arg(&self.sock)
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
    }

    /// containerd's log so far (with the log of a restarted instance after it).
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        if let Ok(more) = fs::read_to_string(self.dir.join("containerd-restarted.log")) {
            log.push_str("--- restarted ---\n");
            log.push_str(&more);
        }
        log
    }

    /// `ctr image import` of the fixture OCI archive.
    #[track_caller]
    pub fn import(&self, archive: &Path) -> CmdOutput {
        self.ctr(&["image", "import", archive.to_str().unwrap()])
            .timeout(Duration::from_secs(120))
            .ok()
    }

    /// Remove every container of our namespace, stop containerd, kill the
    /// shims it started (their command line names our socket), remove the
    /// namespace's cgroups and the temp dir. Idempotent; never panics.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(out) = self.ctr(&["container", "ls", "-q"]).output_result() {
            for id in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self
                    .ctr(&["task", "kill", "-s", "KILL", id])
                    .output_result();
                let _ = self.ctr(&["task", "rm", "-f", id]).output_result();
                let _ = self.ctr(&["container", "rm", id]).output_result();
            }
        }
        stop_child(&mut child, Duration::from_secs(10));
        let sock = self.sock.to_string_lossy().into_owned();
        let killed = kill_processes_mentioning(&sock);
        if !killed.is_empty() {
            eprintln!("cleanup: killed leftover shims {killed:?}");
        }
        // Containers were SIGKILLed with their shims only if something went wrong;
        // their cgroups (/<namespace>/<id>) go now, the namespace's parent too.
        std::thread::sleep(Duration::from_millis(200));
        remove_cgroup_tree(&format!("/{}", self.namespace));
        let runc_default = Path::new("/run/containerd/runc").join(&self.namespace);
        if runc_default.exists() {
            remove_tree(&runc_default);
        }
        remove_tree(&self.dir);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Paths some clients create outside their configured directories (see
/// real-clients.md §10). Remembers which of them existed before the tests, so
/// that cleanup removes only what the tests made.
#[derive(Debug)]
pub struct HostLeftovers {
    /// (path, remove recursively, existed before)
    paths: Vec<(PathBuf, bool, bool)>,
    /// (cgroup path, existed before in the memory hierarchy)
    cgroups: Vec<(String, bool)>,
}

impl HostLeftovers {
    /// `paths`: (path, whether to remove it recursively — for caches; other
    /// directories go only when empty), in the order to remove them.
    pub fn snapshot(paths: &[(&str, bool)], cgroups: &[&str]) -> HostLeftovers {
        HostLeftovers {
            paths: paths
                .iter()
                .map(|(p, recursive)| (PathBuf::from(p), *recursive, Path::new(p).exists()))
                .collect(),
            cgroups: cgroups
                .iter()
                .map(|c| (c.to_string(), crate::host::cgroup_dir("memory", c).exists()))
                .collect(),
        }
    }

    /// Remove what did not exist at the snapshot.
    pub fn clean(&self) {
        for (path, recursive, existed) in &self.paths {
            if *existed || !path.exists() {
                continue;
            }
            let result = if path.is_dir() && *recursive {
                fs::remove_dir_all(path)
            } else if path.is_dir() {
                fs::remove_dir(path)
            } else {
                fs::remove_file(path)
            };
            if let Err(e) = result {
                eprintln!("cleanup: cannot remove {}: {e}", path.display());
            }
        }
        for (cg, existed) in &self.cgroups {
            if !*existed {
                remove_cgroup_tree(cg);
            }
        }
    }
}

/// podman 4.3 as root with a private store (`--root`, `--runroot`, `--tmpdir`),
/// the runtime under test (`--runtime`), cgroupfs, file events, and no CNI networking.
///
/// The runtime keeps its state in its default `--root` (`/run/runc`,
/// `/run/kapsel-runtime`): podman's `--runtime-flag root=DIR` is not passed on
/// by the cleanup process of `run --rm` (`delete --force ID` arrives without it),
/// so a private root would not see every call.
#[derive(Debug)]
pub struct Podman {
    dir: PathBuf,
    runtime: PathBuf,
    cgroup_parent: String,
    leftovers: HostLeftovers,
    cleaned: bool,
}

impl Podman {
    /// Sets up the store and loads the fixture OCI archive.
    #[track_caller]
    pub fn new(runtime: &Path, archive: &Path) -> Podman {
        require_root();
        require_program("podman", "podman");
        let leftovers = HostLeftovers::snapshot(
            &[
                ("/var/lib/containers/cache", true),
                ("/var/lib/containers", false),
                ("/run/libpod", false),
                ("/run/containers", false),
                ("/run/runc", false),
                ("/run/crun", false),
                ("/run/kapsel-runtime", false),
            ],
            &["/libpod_parent"],
        );
        let dir = tempfile::Builder::new()
            .prefix("kapsel-it-podman-")
            .tempdir()
            .expect("podman temp dir")
            .keep();
        let p = Podman {
            dir,
            runtime: runtime.to_path_buf(),
            cgroup_parent: format!("/{}", unique("kt-podman")),
            leftovers,
            cleaned: false,
        };
        p.cmd(&["load", "-i", archive.to_str().unwrap()])
            .timeout(Duration::from_secs(120))
            .ok();
        p
    }

    /// `podman <store and runtime flags> ARGS...`
    pub fn cmd(&self, args: &[&str]) -> Cmd {
        let d = &self.dir;
        Cmd::new("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--network-config-dir")
            .arg(d.join("cni"))
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            .timeout(Duration::from_secs(120))
    }

    /// Flags every `podman run` of the tests needs on this machine: rlimits
    /// within the host's hard limits (podman as root asks for nofile=1048576
    /// otherwise), no network, and our own cgroup parent.
    pub fn run_flags(&self) -> Vec<String> {
        [
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
            "--network",
            "none",
            "--cgroup-parent",
            &self.cgroup_parent,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Remove containers and images, conmon leftovers, mounts, the store and
    /// what podman made on the host. Idempotent; never panics.
    pub fn clean(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        let _ = self.cmd(&["rm", "-af", "-t", "0"]).output_result();
        let _ = self.cmd(&["rmi", "-af"]).output_result();
        let killed = kill_processes_mentioning(&self.dir.to_string_lossy());
        if !killed.is_empty() {
            eprintln!("cleanup: killed leftover podman processes {killed:?}");
        }
        remove_cgroup_tree(&self.cgroup_parent);
        remove_tree(&self.dir);
        self.leftovers.clean();
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.clean();
    }
}

/// dockerd 20.10 with its own data-root, exec-root, socket and pidfile, no
/// networking (no bridge, no iptables), its own managed containerd, and the
/// runtime under test added as `kapsel` (`--add-runtime`).
#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    sock: PathBuf,
    child: Option<Child>,
    leftovers: HostLeftovers,
}

/// The docker CLI that matches dockerd 20.10 (/usr/local/bin/docker is another one).
pub const DOCKER_CLI: &str = "/usr/bin/docker";

impl Dockerd {
    /// Start it, wait for `docker info`, and `docker load` the docker-archive.
    #[track_caller]
    pub fn start(runtime: &Path, archive: &Path) -> Dockerd {
        require_root();
        require_program("dockerd", "docker.io");
        require_program(DOCKER_CLI, "docker.io");
        let leftovers = HostLeftovers::snapshot(
            &[
                ("/etc/docker/key.json", false),
                ("/etc/docker", false),
                ("/run/docker/plugins", false),
                ("/run/docker", false),
            ],
            &["/docker"],
        );
        // Short: unix socket paths (exec-root/containerd/...) must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kt-dockerd-")
            .tempdir()
            .expect("dockerd temp dir")
            .keep();
        let sock = dir.join("docker.sock");
        let config = serde_json::json!({
            "data-root": dir.join("data").display().to_string(),
            "exec-root": dir.join("exec").display().to_string(),
            "pidfile": dir.join("dockerd.pid").display().to_string(),
            "hosts": [format!("unix://{}", sock.display())],
            "storage-driver": "overlay2",
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "bridge": "none",
        });
        let config_path = dir.join("daemon.json");
        fs::write(&config_path, config.to_string()).expect("write daemon.json");
        let add_runtime = format!("kapsel={}", runtime.display());
        let child = spawn_daemon(
            "dockerd",
            &[
                "--config-file",
                config_path.to_str().unwrap(),
                "--add-runtime",
                &add_runtime,
            ],
            &dir.join("dockerd.log"),
        );
        let mut d = Dockerd {
            dir,
            sock,
            child: Some(child),
            leftovers,
        };
        let up = wait_until(Duration::from_secs(60), || {
            d.sock.exists() && d.docker(&["info"]).output().success()
        });
        if !up {
            let log = d.log();
            d.stop();
            panic!("dockerd did not come up within 60 s; its log:\n{log}");
        }
        d.docker(&["load", "-i", archive.to_str().unwrap()])
            .timeout(Duration::from_secs(120))
            .ok();
        d
    }

    /// `/usr/bin/docker -H unix://SOCK ARGS...`
    pub fn docker(&self, args: &[&str]) -> Cmd {
        Cmd::new(DOCKER_CLI)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .timeout(Duration::from_secs(120))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Remove containers, stop dockerd (and with it its containerd), kill
    /// leftover shims, unmount and remove everything. Idempotent; never panics.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(out) = self.docker(&["ps", "-aq"]).output_result() {
            let ids: Vec<&str> = out.stdout.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args).output_result();
            }
        }
        stop_child(&mut child, Duration::from_secs(20));
        let killed = kill_processes_mentioning(&self.dir.to_string_lossy());
        if !killed.is_empty() {
            eprintln!("cleanup: killed leftover dockerd processes {killed:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
        remove_tree(&self.dir);
        self.leftovers.clean();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}
