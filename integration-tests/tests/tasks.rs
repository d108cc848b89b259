//! kapseld's task driving (`kapsel_manager::tasks`) against the real shim, runtime and kernel, as
//! kapseld uses it: an overlay snapshot of busybox on a chain of 130 layers (its mount options
//! are past the kernel's 4096-byte page, so the shim must mount it with relative layer paths),
//! a bundle under a private state directory, `containerd-shim-kapsel-v2` started with `-address`
//! and `TTRPC_ADDRESS` naming a real `kapseld`'s socket, whose event stream must then show the
//! task's events.
//!
//! Binaries: the shim `$KAPSEL_SHIM`, else `target/{release,debug}/containerd-shim-kapsel-v2`;
//! the runtime `$KAPSEL_RUNTIME` (see the README); `kapseld` from `$KAPSEL_MANAGER_BIN_DIR`,
//! else `target/{release,debug}`. The test process is a child subreaper (the shims it starts
//! are re-parented to it) and reaps the pids it knows.
//!
//! Run: `cargo test -p kapsel-integration-tests --test tasks`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kapsel_integration_tests::env::{repo_root, runtime_binary};
use kapsel_integration_tests::host::{self, pid_alive};
use kapsel_integration_tests::{require_root, unique, Cmd, Fixtures};
use kapsel_manager::snapshots::{Labels, MountGuard, OverlaySnapshotter, Snapshotter};
use kapsel_manager::tasks::{self, ErrorKind, Shim, ShimSpec, Status, Stdio};

const LAYERS: usize = 130;

fn built(env: &str, name: &str) -> PathBuf {
    if let Some(v) = std::env::var_os(env) {
        let p = PathBuf::from(v);
        let p = if p.is_relative() {
            repo_root().join(p)
        } else {
            p
        };
        return if env == "KAPSEL_MANAGER_BIN_DIR" {
            p.join(name)
        } else {
            p
        };
    }
    ["release", "debug"]
        .iter()
        .map(|profile| repo_root().join("target").join(profile).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not built: cargo build --release -p <its crate>"))
}

/// Waits for `pid` (a child of this subreaper) to exit and reaps it; false after `timeout`.
fn reap(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one pid with a valid out pointer; WNOHANG never blocks.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid || (rc < 0 && !pid_alive(pid)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER failed");
}

/// A kapseld on a private root; SIGTERMed when dropped.
struct Kapseld {
    sock: PathBuf,
    log: PathBuf,
    child: std::process::Child,
}

impl Kapseld {
    fn start(dir: &Path) -> Kapseld {
        let sock = dir.join("kapseld.sock");
        let log = dir.join("kapseld.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(built("KAPSEL_MANAGER_BIN_DIR", "kapseld"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&sock)
            .args(["--log-level", "debug"])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start kapseld");
        assert!(
            host::wait_until(Duration::from_secs(30), || {
                std::os::unix::net::UnixStream::connect(&sock).is_ok()
            }),
            "kapseld did not serve {}",
            sock.display()
        );
        Kapseld { sock, log, child }
    }

    /// Events after `after` on the `/tasks/` topics, through kapseld's events API.
    fn task_events(&self, after: u64) -> (Vec<(String, String, serde_json::Value)>, u64) {
        let c = kapsel_proto::ttrpc::Client::connect(&format!("unix://{}", self.sock.display()))
            .expect("connect to kapseld");
        let events = kapsel_proto::events_ttrpc::EventsClient::new(c);
        let b = events
            .subscribe(
                kapsel_proto::ttrpc::context::with_timeout(10_000_000_000),
                &kapsel_proto::events::SubscribeRequest {
                    after_seq: after,
                    wait_ms: 500,
                    topics: vec!["/tasks/".into()],
                    ..Default::default()
                },
            )
            .expect("subscribe to kapseld's events");
        let got = b
            .events
            .iter()
            .map(|e| {
                (
                    e.namespace.clone(),
                    e.topic.clone(),
                    serde_json::from_str(&e.event).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        (got, b.last_seq)
    }
}

impl Drop for Kapseld {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- kapseld log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Everything one test made: the snapshot chain, kapseld, the bundle; removed when dropped.
/// (Fields drop in order: kapseld and the snapshotter before their directory.)
struct Setup {
    kapseld: Kapseld,
    snapshotter: OverlaySnapshotter,
    top: String,
    namespace: String,
    /// Shims started, and the tasks' cgroups: killed and removed at drop (a failed test too).
    started: std::cell::RefCell<Vec<(i32, String)>>,
    dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for (shim_pid, id) in self.started.borrow().iter() {
            if pid_alive(*shim_pid) {
                // SAFETY: kill(2) on a shim this test started and has not reaped.
                unsafe { libc::kill(*shim_pid, libc::SIGKILL) };
                reap(*shim_pid, Duration::from_secs(5));
            }
            host::force_remove_cgroup(&cgroups_path(id));
            let rootfs = self
                .dir
                .path()
                .join("state/tasks")
                .join(&self.namespace)
                .join(id)
                .join("rootfs");
            let _ = kapsel_manager::snapshots::unmount_all(&rootfs);
        }
    }
}

impl Setup {
    fn new(tag: &str) -> Setup {
        require_root();
        become_subreaper();
        let dir = tempfile::Builder::new()
            .prefix(&format!("ktasks-{tag}-"))
            .tempdir()
            .unwrap();
        let snapshotter = OverlaySnapshotter::open(&dir.path().join("snapshots")).unwrap();
        // Layer 1: the busybox rootfs; layers 2..=LAYERS: one file each.
        let rootfs = std::fs::canonicalize(Fixtures::get().rootfs()).unwrap();
        let mut parent: Option<String> = None;
        for n in 1..=LAYERS {
            let key = format!("layer-{n}-active");
            let mounts = snapshotter
                .prepare(&key, parent.as_deref(), Labels::new())
                .unwrap();
            let at = dir.path().join("unpack");
            std::fs::create_dir_all(&at).unwrap();
            let guard = MountGuard::mount(&mounts, &at).unwrap();
            if n == 1 {
                Cmd::new("cp")
                    .arg("-a")
                    .arg(format!("{}/.", rootfs.display()))
                    .arg(&at)
                    .ok();
                std::fs::create_dir(at.join("layers")).unwrap();
            }
            std::fs::write(
                at.join("layers").join(n.to_string()),
                format!("layer {n}\n"),
            )
            .unwrap();
            guard.unmount().unwrap();
            let name = format!("layer-{n}");
            snapshotter.commit(&name, &key, Labels::new()).unwrap();
            parent = Some(name);
        }
        let kapseld = Kapseld::start(dir.path());
        Setup {
            namespace: unique("ktasks"),
            top: parent.unwrap(),
            started: Default::default(),
            snapshotter,
            kapseld,
            dir,
        }
    }

    /// A bundle as kapseld lays it out (`<state>/tasks/<ns>/<id>`) running `args`, and the
    /// spec to start its shim.
    fn bundle(&self, id: &str, args: &[&str]) -> ShimSpec {
        let bundle = self
            .dir
            .path()
            .join("state/tasks")
            .join(&self.namespace)
            .join(id);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        Cmd::new(runtime_binary())
            .arg("spec")
            .current_dir(&bundle)
            .ok();
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
        config["process"]["terminal"] = serde_json::json!(false);
        config["process"]["args"] = serde_json::json!(args);
        config["linux"]["cgroupsPath"] = serde_json::json!(cgroups_path(id));
        std::fs::write(&path, config.to_string()).unwrap();
        ShimSpec {
            id: id.to_string(),
            namespace: self.namespace.clone(),
            bundle,
            runtime_binary: Some(runtime_binary()),
            shim_binary: built("KAPSEL_SHIM", "containerd-shim-kapsel-v2"),
            daemon_address: self.kapseld.sock.clone(),
        }
    }

    /// Starts the task's shim (recorded for cleanup); its pid.
    fn start_shim(&self, spec: &ShimSpec) -> (Shim, i32) {
        let shim = tasks::start_shim(spec).expect("start the shim");
        let (shim_pid, _) = shim.connect_info().unwrap();
        self.started
            .borrow_mut()
            .push((shim_pid as i32, spec.id.clone()));
        (shim, shim_pid as i32)
    }

    /// The container's snapshot on top of the layer chain; its mounts.
    fn snapshot(&self, id: &str) -> Vec<kapsel_manager::snapshots::Mount> {
        let mounts = self
            .snapshotter
            .prepare(id, Some(&self.top), Labels::new())
            .unwrap();
        let len: usize = mounts
            .iter()
            .map(|m| m.options.join(",").len())
            .max()
            .unwrap();
        assert!(len > 4096, "the overlay options are only {len} bytes");
        mounts
    }
}

fn cgroups_path(id: &str) -> String {
    format!("/{id}")
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.display().to_string();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_str()))
}

fn memory_limit_of(pid: u32) -> u64 {
    let file = host::memory_cgroup_of(pid as i32).join("memory.limit_in_bytes");
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Collects `/tasks/` events of our namespace from kapseld until `done` holds or 20 s pass.
fn events_until(
    s: &Setup,
    mut done: impl FnMut(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0;
    let mut got = Vec::new();
    while !done(&got) {
        assert!(
            Instant::now() < deadline,
            "kapseld's events never completed; got {got:#?}"
        );
        let (batch, last) = s.kapseld.task_events(seq);
        seq = last;
        got.extend(
            batch
                .into_iter()
                .filter(|(ns, _, _)| *ns == s.namespace)
                .map(|(_, topic, ev)| (topic, ev)),
        );
    }
    got
}

#[test]
fn task_lifecycle_through_the_shim_with_events_in_kapseld() {
    let s = Setup::new("life");
    let id = unique("ktasks-life");
    let spec = s.bundle(&id, &["sleep", "1000"]);
    let mounts = s.snapshot(&id);
    let t0 = Instant::now();
    let (shim, shim_pid) = s.start_shim(&spec);
    let t_shim = t0.elapsed();
    let out_dir = s.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();

    let t0 = Instant::now();
    let pid = shim.create(mounts, &Stdio::default()).expect("create");
    let t_create = t0.elapsed();
    eprintln!("start_shim {t_shim:?}, create ({LAYERS}-layer overlay) {t_create:?}");
    assert!(mounted(&spec.bundle.join("rootfs")), "rootfs not mounted");
    assert_eq!(shim.state(None).unwrap().status, Status::Created);
    assert_eq!(shim.start(None).unwrap(), pid);
    assert!(pid_alive(pid as i32));
    assert_eq!(shim.state(None).unwrap().status, Status::Running);
    assert!(shim.pids().unwrap().contains(&pid));

    // An exec sees the top layer of the 130 and the busybox of the bottom one.
    let out = out_dir.join("e1.out");
    let stdio = Stdio {
        stdout: format!("file://{}", out.display()),
        stderr: format!("file://{}", out.display()),
        ..Default::default()
    };
    shim.exec(
        "e1",
        &host::exec_process(&["sh", "-c", "cat /layers/1 /layers/130; exit 3"]),
        &stdio,
    )
    .unwrap();
    shim.start(Some("e1")).unwrap();
    let exit = shim.wait(Some("e1")).unwrap();
    assert_eq!(exit.exit_status, 3);
    assert!(exit.exited_at.is_some());
    assert!(
        host::wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&out).unwrap_or_default() == "layer 1\nlayer 130\n"
        }),
        "exec output: {:?}",
        std::fs::read_to_string(&out)
    );
    assert_eq!(shim.delete(Some("e1")).unwrap().exit_status, 3);
    let e = shim.state(Some("e1")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    shim.pause().unwrap();
    assert_eq!(shim.state(None).unwrap().status, Status::Paused);
    let e = shim.pause().unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Unavailable, "{e}");
    shim.resume().unwrap();
    assert_eq!(shim.state(None).unwrap().status, Status::Running);

    let stats = shim.stats().unwrap();
    assert!(stats.pids_current >= 1, "{stats:?}");
    assert!(stats.memory_usage > 0, "{stats:?}");
    shim.update(&serde_json::json!({"memory": {"limit": 64 << 20}}))
        .unwrap();
    assert_eq!(memory_limit_of(pid), 64 << 20);
    assert_eq!(shim.stats().unwrap().memory_limit, 64 << 20);

    let e = shim.delete(None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    shim.kill(None, libc::SIGKILL as u32, false).unwrap();
    let exit = shim.wait(None).unwrap();
    assert_eq!(exit.exit_status, 137);
    let deleted = shim.delete(None).unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (pid, 137));
    assert!(
        !mounted(&spec.bundle.join("rootfs")),
        "rootfs still mounted"
    );
    shim.shutdown(false).unwrap();
    assert!(reap(shim_pid, Duration::from_secs(10)), "shim did not exit");

    // kapseld got every event from the shim, in order, on its own stream.
    let events = events_until(&s, |got| got.iter().any(|(t, _)| t == "/tasks/delete"));
    let topics: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete",
        ],
        "{events:#?}"
    );
    assert_eq!(events[0].1["pid"], pid);
    assert_eq!(events[3].1["exec_id"], "e1");
    assert_eq!(events[4].1["exit_status"], 3);
    assert_eq!(events[7].1["container_id"], id.as_str());
    assert_eq!(events[7].1["exit_status"], 137);

    s.snapshotter.remove(&id).unwrap();
    host::force_remove_cgroup(&cgroups_path(&id));
}

#[test]
fn sigkilled_shim_is_cleaned_up() {
    let s = Setup::new("kill");
    let id = unique("ktasks-kill");
    let spec = s.bundle(&id, &["sleep", "1000"]);
    let mounts = s.snapshot(&id);
    let (shim, shim_pid) = s.start_shim(&spec);
    let pid = shim.create(mounts, &Stdio::default()).unwrap();
    shim.start(None).unwrap();
    assert_eq!(shim.connect_info().unwrap(), (shim_pid as u32, pid));

    let e = tasks::cleanup_dead_shim(&spec).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(spec.bundle.is_dir(), "a live shim's bundle was touched");

    // SAFETY: kill(2) on the shim this test started.
    unsafe { libc::kill(shim_pid, libc::SIGKILL) };
    assert!(reap(shim_pid, Duration::from_secs(10)));
    let e = shim.state(None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // The container outlives its shim until the cleanup.
    assert!(pid_alive(pid as i32));

    let exit = tasks::cleanup_dead_shim(&spec).expect("cleanup after the dead shim");
    assert_eq!(exit.exit_status, 137);
    assert!(exit.exited_at.is_some());
    assert!(
        reap(pid as i32, Duration::from_secs(10)),
        "container left running"
    );
    assert!(!spec.bundle.exists(), "bundle left behind");
    assert!(!mounted(&spec.bundle.join("rootfs")), "rootfs left mounted");
    let rt_root = Path::new("/run/kapsel/shim-runtime").join(&s.namespace);
    let state = Cmd::new(runtime_binary())
        .arg("--root")
        .arg(&rt_root)
        .args(["state", &id])
        .output();
    assert!(
        !state.success(),
        "runtime still knows the container: {state}"
    );
    assert!(
        host::cgroup_procs("memory", &cgroups_path(&id)).is_empty(),
        "processes left in the cgroup"
    );
    s.snapshotter.remove(&id).unwrap();
    host::force_remove_cgroup(&cgroups_path(&id));
}

const RECONNECT_ENV: &str = "KTASKS_RECONNECT_SPEC";

/// Run by `a_new_process_reconnects_to_a_running_task` in a process of its own.
#[test]
#[ignore = "helper: run by a_new_process_reconnects_to_a_running_task"]
fn reconnect_helper() {
    let Ok(v) = std::env::var(RECONNECT_ENV) else {
        panic!("{RECONNECT_ENV} not set: this test is run by another one");
    };
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    let field = |k: &str| v[k].as_str().unwrap().to_string();
    let spec = ShimSpec {
        id: field("id"),
        namespace: field("namespace"),
        bundle: field("bundle").into(),
        runtime_binary: None,
        shim_binary: field("shim").into(),
        daemon_address: field("daemon").into(),
    };
    let shim = Shim::connect(&spec).expect("reconnect");
    let st = shim.state(None).unwrap();
    println!("RECONNECTED pid={} status={:?}", st.pid, st.status);
}

#[test]
fn a_new_process_reconnects_to_a_running_task() {
    let s = Setup::new("reco");
    let id = unique("ktasks-reco");
    let spec = s.bundle(&id, &["sleep", "1000"]);
    let mounts = s.snapshot(&id);
    let (shim, shim_pid) = s.start_shim(&spec);
    let pid = shim.create(mounts, &Stdio::default()).unwrap();
    shim.start(None).unwrap();
    drop(shim);

    let arg = serde_json::json!({
        "id": spec.id,
        "namespace": spec.namespace,
        "bundle": spec.bundle,
        "shim": spec.shim_binary,
        "daemon": spec.daemon_address,
    });
    let out = Cmd::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reconnect_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RECONNECT_ENV, arg.to_string())
        .timeout(Duration::from_secs(60))
        .ok();
    assert!(
        out.stdout
            .contains(&format!("RECONNECTED pid={pid} status=Running")),
        "{out}"
    );

    let shim = Shim::connect(&spec).unwrap();
    shim.kill(None, libc::SIGKILL as u32, false).unwrap();
    assert_eq!(shim.wait(None).unwrap().exit_status, 137);
    shim.delete(None).unwrap();
    shim.shutdown(false).unwrap();
    assert!(reap(shim_pid, Duration::from_secs(10)));
    s.snapshotter.remove(&id).unwrap();
    host::force_remove_cgroup(&cgroups_path(&id));
}
