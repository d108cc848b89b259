//! containerd 1.6 (`ctr`) driving our shim, `containerd-shim-kapsel-v2`, through the shim v2
//! contract (`ctr run --runtime /abs/path/containerd-shim-kapsel-v2`). The shim runs the
//! `kapsel-runtime` found beside it.
//!
//! The shim under test is `$KAPSEL_SHIM`, else `target/{release,debug}/containerd-shim-kapsel-v2`.
//! One containerd serves every test of this file (a mutex); it is stopped, with its shims and
//! temp dir, when the test process exits.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::cgroups::metrics::Metrics as MetricsV1;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::{ttrpc, Client, TaskClient};
use kapsel_integration_tests::clients::{Containerd, BUSYBOX_IMAGE};
use kapsel_integration_tests::command::Running;
use kapsel_integration_tests::daemon::{pids_matching, signal};
use kapsel_integration_tests::env::repo_root;
use kapsel_integration_tests::{
    pid_alive, require_program, require_root, unique, wait_until, Cmd, Fixtures,
};

static DAEMON: Mutex<Option<Containerd>> = Mutex::new(None);

extern "C" fn stop_daemon_at_exit() {
    let mut guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut c) = guard.take() {
        c.stop();
    }
}

fn shim_binary() -> PathBuf {
    if let Some(v) = std::env::var_os("KAPSEL_SHIM") {
        return PathBuf::from(v);
    }
    for profile in ["release", "debug"] {
        let p = repo_root()
            .join("target")
            .join(profile)
            .join("containerd-shim-kapsel-v2");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "containerd-shim-kapsel-v2 not built: cargo build --release -p containerd-shim-kapsel-v2"
    );
}

fn with_containerd(f: impl FnOnce(&Containerd, &str)) {
    require_program("ctr", "containerd");
    let mut guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let archive = Fixtures::get().oci_archive();
        // SAFETY: atexit registers a plain extern "C" function with no arguments.
        let rc = unsafe { libc::atexit(stop_daemon_at_exit) };
        assert_eq!(rc, 0, "atexit");
        let c = Containerd::start();
        c.import(&archive);
        *guard = Some(c);
    }
    let c = guard.as_ref().expect("containerd");
    f(c, &shim_binary().display().to_string())
}

/// Removes the container (and its task) when the test ends, however it ends.
struct CtrContainer<'a> {
    c: &'a Containerd,
    id: String,
}

impl Drop for CtrContainer<'_> {
    fn drop(&mut self) {
        let _ = self
            .c
            .ctr(&["task", "kill", "-s", "KILL", &self.id])
            .output_result();
        let _ = self.c.ctr(&["task", "rm", "-f", &self.id]).output_result();
        let _ = self.c.ctr(&["container", "rm", &self.id]).output_result();
    }
}

fn ctr_run(c: &Containerd, shim: &str, extra: &[&str], id: &str, cmd: &[&str]) -> Cmd {
    c.ctr(&["run", "--runtime", shim])
        .args(extra)
        .arg(BUSYBOX_IMAGE)
        .arg(id)
        .args(cmd)
        .timeout(Duration::from_secs(60))
}

fn task_status(c: &Containerd, id: &str) -> Option<String> {
    let out = c.ctr(&["task", "ls"]).output();
    out.stdout.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
    })
}

/// Whether a shim process for container `id` is still alive.
fn shim_alive(id: &str) -> bool {
    let out = Cmd::new("pgrep")
        .args(["-f", &format!("containerd-shim-kapsel-v2 .*-id {id}( |$)")])
        .output();
    out.success()
}

#[test]
fn shim_run_passes_output_exit_code_and_cleans_up() {
    with_containerd(|c, shim| {
        let id = unique("kt-shim-run");
        let _guard = CtrContainer { c, id: id.clone() };
        let out = ctr_run(c, shim, &["--rm"], &id, &["sh", "-c", "echo hi; exit 3"]).output();
        assert_eq!(out.code, Some(3), "{out}\ncontainerd log:\n{}", c.log());
        assert_eq!(out.stdout, "hi\n", "{out}");
        let ls = c.ctr(&["container", "ls", "-q"]).ok().stdout;
        assert!(!ls.lines().any(|l| l.trim() == id), "container left: {ls}");
        assert!(
            wait_until(Duration::from_secs(5), || !shim_alive(&id)),
            "shim for {id} still running after --rm"
        );
        // containerd saw the task events the shim published.
        let log = c.log();
        assert!(!log.contains("failed to publish"), "{log}");
    });
}

#[test]
fn shim_forwards_stdin() {
    with_containerd(|c, shim| {
        let id = unique("kt-shim-in");
        let _guard = CtrContainer { c, id: id.clone() };
        let out = ctr_run(c, shim, &["--rm"], &id, &["cat"])
            .stdin("through the fifo\n")
            .output();
        assert!(out.success(), "{out}\ncontainerd log:\n{}", c.log());
        assert_eq!(out.stdout, "through the fifo\n", "{out}");
        // The difference: ctr 1.6 closes its FIFO at the end of its stdin but sends no
        // CloseIO, and runc's shim ends the container's input only on CloseIO.
        let id = unique("kt-shim-in-runc");
        let _guard = CtrContainer { c, id: id.clone() };
        let runc = run_with(c, shim, Which::Runc, &["--rm"], &id, &["cat"])
            .stdin("through the fifo\n")
            .timeout(Duration::from_secs(5))
            .output_result();
        eprintln!(
            "runc's shim: {}",
            match runc {
                Ok(out) => format!("finished: {out}"),
                Err(_) => "cat never saw the end of its input (killed after 5 s)".into(),
            }
        );
    });
}

#[test]
fn shim_detached_exec_ps_pause_resume_kill() {
    with_containerd(|c, shim| {
        let id = unique("kt-shim-d");
        let _guard = CtrContainer { c, id: id.clone() };
        let out = ctr_run(c, shim, &["-d"], &id, &["sleep", "1000"]).output();
        assert!(out.success(), "{out}\ncontainerd log:\n{}", c.log());
        assert_eq!(task_status(c, &id).as_deref(), Some("RUNNING"));

        let out = c
            .ctr(&[
                "task",
                "exec",
                "--exec-id",
                "e1",
                &id,
                "sh",
                "-c",
                "echo from-exec; exit 5",
            ])
            .timeout(Duration::from_secs(30))
            .output();
        assert_eq!(out.code, Some(5), "{out}");
        assert_eq!(out.stdout, "from-exec\n", "{out}");

        let ps = c.ctr(&["task", "ps", &id]).ok().stdout;
        assert_eq!(ps.lines().count(), 2, "one process expected:\n{ps}");

        let metrics = c.ctr(&["task", "metrics", &id]).ok().stdout;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("pids.current") && l.contains(" 1")),
            "metrics:\n{metrics}"
        );

        c.ctr(&["task", "pause", &id]).ok();
        assert_eq!(task_status(c, &id).as_deref(), Some("PAUSED"));
        c.ctr(&["task", "resume", &id]).ok();
        assert_eq!(task_status(c, &id).as_deref(), Some("RUNNING"));

        c.ctr(&["task", "kill", "-s", "KILL", &id]).ok();
        assert!(
            wait_until(Duration::from_secs(10), || task_status(c, &id).as_deref()
                == Some("STOPPED")),
            "task not stopped after SIGKILL: {:?}",
            task_status(c, &id)
        );
        c.ctr(&["task", "rm", &id]).ok();
        c.ctr(&["container", "rm", &id]).ok();
        assert!(
            wait_until(Duration::from_secs(5), || !shim_alive(&id)),
            "shim for {id} still running after task rm"
        );
    });
}

#[test]
fn shim_terminal_task_gets_a_pty_and_its_size() {
    require_program("script", "bsdutils");
    with_containerd(|c, shim| {
        let id = unique("kt-shim-tty");
        let _guard = CtrContainer { c, id: id.clone() };
        // ctr -t needs a terminal of its own: script(1) gives it one of 91x17.
        let ctr = format!(
            "stty cols 91 rows 17; ctr -a {} -n {} run -t --rm --runtime {shim} {BUSYBOX_IMAGE} {id} \
             sh -c 'sleep 0.3; tty; stty size; exit 4'",
            c.socket().display(),
            c.namespace()
        );
        let out = Cmd::new("script")
            .args(["-qec", &ctr, "/dev/null"])
            .timeout(Duration::from_secs(60))
            .output();
        assert_eq!(out.code, Some(4), "{out}\ncontainerd log:\n{}", c.log());
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
        assert!(out.stdout.contains("17 91"), "{out}");
    });
}

// ---------------------------------------------------------------------------------------------
// Both shims side by side, events, OOM, faults, the task API called directly.

/// The shim a scenario runs through: ours, or containerd's runc shim with real runc (its own
/// `--runc-root` in containerd's temp dir) for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Kapsel,
    Runc,
}

const BOTH: [Which; 2] = [Which::Kapsel, Which::Runc];

impl Which {
    fn flags(self, c: &Containerd, shim: &str) -> Vec<String> {
        match self {
            Which::Kapsel => vec!["--runtime".into(), shim.into()],
            Which::Runc => vec![
                "--runtime".into(),
                "io.containerd.runc.v2".into(),
                "--runc-root".into(),
                c.runc_root().display().to_string(),
            ],
        }
    }

    /// Where the runtime keeps the state of container `id`.
    fn state_dir(self, c: &Containerd, id: &str) -> PathBuf {
        match self {
            Which::Kapsel => Path::new("/run/kapsel/shim-runtime")
                .join(c.namespace())
                .join(id),
            Which::Runc => c.runc_root().join(c.namespace()).join(id),
        }
    }
}

fn run_with(
    c: &Containerd,
    shim: &str,
    which: Which,
    extra: &[&str],
    id: &str,
    cmd: &[&str],
) -> Cmd {
    c.ctr(&["run"])
        .args(which.flags(c, shim))
        .args(extra)
        .arg(BUSYBOX_IMAGE)
        .arg(id)
        .args(cmd)
        .timeout(Duration::from_secs(60))
}

/// One line of `ctr events`: topic and the event as JSON.
#[derive(Debug, Clone)]
struct Event {
    topic: String,
    json: String,
}

/// `ctr events` running in the background.
struct EventLog {
    running: Option<Running>,
}

impl EventLog {
    fn start(c: &Containerd) -> EventLog {
        let running = c.ctr(&["events"]).timeout(Duration::from_secs(900)).spawn();
        // Let the subscription reach containerd before the scenario starts.
        std::thread::sleep(Duration::from_millis(500));
        EventLog {
            running: Some(running),
        }
    }

    /// Stop recording (after a moment for late events) and parse what was printed:
    /// `<timestamp with spaces> <namespace> <topic> <json>`.
    fn stop(mut self) -> Vec<Event> {
        std::thread::sleep(Duration::from_millis(500));
        let running = self.running.take().expect("running");
        signal(running.pid() as i32, libc::SIGTERM);
        let out = running.wait_result().unwrap_or_else(|e| panic!("{e}"));
        out.stdout
            .lines()
            .filter_map(|l| {
                let start = l.find(" /")? + 1;
                let (topic, json) = l[start..].split_once(' ').unwrap_or((&l[start..], ""));
                Some(Event {
                    topic: topic.to_string(),
                    json: json.to_string(),
                })
            })
            .collect()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            signal(r.pid() as i32, libc::SIGKILL);
            let _ = r.wait_result();
        }
    }
}

/// The `/tasks/...` topics of container `id`, in the order containerd published them.
fn task_topics(events: &[Event], id: &str) -> Vec<String> {
    let needle = format!("\"container_id\":\"{id}\"");
    events
        .iter()
        .filter(|e| e.topic.starts_with("/tasks/") && e.json.contains(&needle))
        .map(|e| e.topic.clone())
        .collect()
}

fn wait_stopped(c: &Containerd, id: &str) {
    assert!(
        wait_until(Duration::from_secs(20), || task_status(c, id).as_deref()
            == Some("STOPPED")),
        "task {id} not stopped: {:?}",
        task_status(c, id)
    );
}

/// Mount points at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(String::from)
        .collect()
}

/// The host pid of task `id` from `ctr task ls`.
fn task_pid(c: &Containerd, id: &str) -> i32 {
    let out = c.ctr(&["task", "ls"]).ok();
    out.stdout
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(1)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("task {id} not listed:\n{out}"))
}

#[test]
fn shim_oom_kill_is_reported_and_exit_is_137() {
    with_containerd(|c, shim| {
        for which in BOTH {
            let id = unique(&format!("kt-shim-oom-{which:?}").to_lowercase());
            let _guard = CtrContainer { c, id: id.clone() };
            let events = EventLog::start(c);
            // 32 MiB, no swap on this machine: tail buffers /dev/zero until the limit is hit.
            let out = run_with(
                c,
                shim,
                which,
                &["--rm", "--memory-limit", "33554432"],
                &id,
                &["sh", "-c", "tail /dev/zero"],
            )
            .output();
            let events = events.stop();
            let topics = task_topics(&events, &id);
            eprintln!("{which:?}: exit {:?}, task events {topics:?}", out.code);
            assert_eq!(out.code, Some(137), "{which:?}: {out}\n{}", c.log());
            assert!(
                topics.iter().any(|t| t == "/tasks/oom"),
                "{which:?}: no /tasks/oom for {id}: {topics:?}"
            );
            let oom = topics.iter().position(|t| t == "/tasks/oom").unwrap();
            let delete = topics.iter().position(|t| t == "/tasks/delete");
            assert!(
                delete.is_none_or(|d| oom < d),
                "{which:?}: OOM after delete: {topics:?}"
            );
        }
    });
}

#[test]
fn shim_events_come_complete_and_in_order() {
    with_containerd(|c, shim| {
        let mut seen = Vec::new();
        for which in BOTH {
            let id = unique(&format!("kt-shim-ev-{which:?}").to_lowercase());
            let _guard = CtrContainer { c, id: id.clone() };
            let events = EventLog::start(c);
            run_with(c, shim, which, &["-d"], &id, &["sleep", "1000"]).ok();
            let out = c
                .ctr(&["task", "exec", "--exec-id", "e1", &id, "sh", "-c", "exit 2"])
                .timeout(Duration::from_secs(30))
                .output();
            assert_eq!(out.code, Some(2), "{which:?}: {out}");
            c.ctr(&["task", "pause", &id]).ok();
            c.ctr(&["task", "resume", &id]).ok();
            c.ctr(&["task", "kill", "-s", "KILL", &id]).ok();
            wait_stopped(c, &id);
            c.ctr(&["task", "rm", &id]).ok();
            c.ctr(&["container", "rm", &id]).ok();
            let events = events.stop();
            let topics = task_topics(&events, &id);
            eprintln!("{which:?}: {topics:?}");
            seen.push((which, topics, events));
        }
        let expected = [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete",
        ];
        for (which, topics, events) in &seen {
            assert_eq!(topics, &expected, "{which:?}: all events:\n{events:#?}");
        }
        // The exec's exit names the exec and its status, the init's exit 137.
        let (_, _, events) = &seen[0];
        let exits: Vec<&Event> = events.iter().filter(|e| e.topic == "/tasks/exit").collect();
        assert!(
            exits[0].json.contains("\"id\":\"e1\"") && exits[0].json.contains("\"exit_status\":2"),
            "{exits:#?}"
        );
        assert!(exits[1].json.contains("\"exit_status\":137"), "{exits:#?}");
    });
}

// ---------------------------------------------------------------------------------------------
// The task API called directly (ttrpc), for what ctr 1.6 does not call.

fn task_client(address: &str) -> TaskClient {
    let client =
        Client::connect(address).unwrap_or_else(|e| panic!("connect to shim at {address}: {e}"));
    TaskClient::new(client)
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(30_000_000_000)
}

/// The status of a call that must fail.
#[track_caller]
fn status_of<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message.clone()),
        other => panic!("expected a ttrpc error status, got {other:?}"),
    }
}

fn json_any(type_url: &str, v: &serde_json::Value) -> Any {
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = v.to_string().into_bytes();
    any
}

/// An OCI process for Exec, as containerd sends it.
fn exec_spec(args: &[&str]) -> Any {
    json_any(
        "types.containerd.io/opencontainers/runtime-spec/1/Process",
        &kapsel_integration_tests::host::exec_process(args),
    )
}

#[test]
fn shim_task_api_update_stats_connect_checkpoint_and_refusals() {
    with_containerd(|c, shim| {
        for which in BOTH {
            let id = unique(&format!("kt-shim-api-{which:?}").to_lowercase());
            let _guard = CtrContainer { c, id: id.clone() };
            run_with(c, shim, which, &["-d"], &id, &["sleep", "1000"]).ok();
            let address = std::fs::read_to_string(c.bundle_dir(&id).join("address")).unwrap();
            let client = task_client(address.trim());
            let pid = task_pid(c, &id);

            let r = client
                .connect(
                    ctx(),
                    &api::ConnectRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Connect: {e:?}"));
            assert_eq!(r.task_pid as i32, pid, "{which:?}: {r:?}");
            assert!(pid_alive(r.shim_pid as i32), "{which:?}: {r:?}");

            let r = client
                .stats(
                    ctx(),
                    &api::StatsRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Stats: {e:?}"));
            let any = r.stats.as_ref().expect("stats");
            // This host is cgroup v1 (hybrid): v1 metrics.
            assert_eq!(
                any.type_url, "io.containerd.cgroups.v1.Metrics",
                "{which:?}"
            );
            let m = MetricsV1::parse_from_bytes(&any.value).unwrap();
            assert_eq!(m.pids.current, 1, "{which:?}: {m:?}");
            assert!(m.memory.usage.usage > 0, "{which:?}: {m:?}");

            let limit = 64 * 1024 * 1024;
            let resources = json_any(
                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
                &serde_json::json!({"memory": {"limit": limit}}),
            );
            client
                .update(
                    ctx(),
                    &api::UpdateTaskRequest {
                        id: id.clone(),
                        resources: Some(resources).into(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Update: {e:?}"));
            let got = std::fs::read_to_string(
                kapsel_integration_tests::host::memory_cgroup_of(pid).join("memory.limit_in_bytes"),
            )
            .unwrap();
            assert_eq!(
                got.trim(),
                limit.to_string(),
                "{which:?}: limit after Update"
            );

            let (code, msg) = status_of(client.checkpoint(
                ctx(),
                &api::CheckpointTaskRequest {
                    id: id.clone(),
                    path: "/tmp/kt-no-checkpoint".into(),
                    ..Default::default()
                },
            ));
            eprintln!("{which:?} Checkpoint: {code:?} {msg}");
            if which == Which::Kapsel {
                assert_eq!(code, ttrpc::Code::UNIMPLEMENTED, "{msg}");
                assert!(msg.contains("not implemented"), "{msg}");
            }

            let exec = |exec_id: &str| {
                client.exec(
                    ctx(),
                    &api::ExecProcessRequest {
                        id: id.clone(),
                        exec_id: exec_id.into(),
                        spec: Some(exec_spec(&["sleep", "1000"])).into(),
                        ..Default::default()
                    },
                )
            };
            exec("e1").unwrap_or_else(|e| panic!("{which:?} Exec: {e:?}"));
            client
                .start(
                    ctx(),
                    &api::StartRequest {
                        id: id.clone(),
                        exec_id: "e1".into(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Start e1: {e:?}"));
            let (code, msg) = status_of(exec("e1"));
            eprintln!("{which:?} Exec id in use: {code:?} {msg}");
            assert_eq!(code, ttrpc::Code::ALREADY_EXISTS, "{which:?}: {msg}");
            assert!(msg.contains("e1"), "{which:?}: {msg}");

            let (code, msg) = status_of(client.kill(
                ctx(),
                &api::KillRequest {
                    id: id.clone(),
                    exec_id: "no-such-exec".into(),
                    signal: 9,
                    ..Default::default()
                },
            ));
            eprintln!("{which:?} Kill unknown exec: {code:?} {msg}");
            assert_eq!(code, ttrpc::Code::NOT_FOUND, "{which:?}: {msg}");
            if which == Which::Kapsel {
                assert!(msg.contains("no-such-exec"), "{msg}");
            }

            let (code, msg) = status_of(client.delete(
                ctx(),
                &api::DeleteRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            ));
            eprintln!("{which:?} Delete running: {code:?} {msg}");
            if which == Which::Kapsel {
                assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
                assert!(msg.contains("kill it first"), "{msg}");
            }
            assert_eq!(task_status(c, &id).as_deref(), Some("RUNNING"), "{which:?}");

            client
                .kill(
                    ctx(),
                    &api::KillRequest {
                        id: id.clone(),
                        exec_id: "e1".into(),
                        signal: 9,
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Kill e1: {e:?}"));
            let w = client
                .wait(
                    ctx(),
                    &api::WaitRequest {
                        id: id.clone(),
                        exec_id: "e1".into(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Wait e1: {e:?}"));
            assert_eq!(w.exit_status, 137, "{which:?}");
            client
                .delete(
                    ctx(),
                    &api::DeleteRequest {
                        id: id.clone(),
                        exec_id: "e1".into(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Delete e1: {e:?}"));
        }
    });
}

/// `containerd-shim-kapsel-v2 ... start` in `bundle`, without containerd: the address it prints.
fn start_own_shim(shim: &str, namespace: &str, id: &str, bundle: &Path) -> String {
    let fake = bundle.join("no-containerd.sock");
    let out = Cmd::new(shim)
        .args(["-namespace", namespace, "-address"])
        .arg(&fake)
        .args(["-id", id, "start"])
        .env("TTRPC_ADDRESS", format!("{}.ttrpc", fake.display()))
        .current_dir(bundle)
        .timeout(Duration::from_secs(30))
        .ok();
    out.stdout.trim().to_string()
}

#[test]
fn shim_bad_input_gets_clear_errors_and_leaves_nothing() {
    require_root();
    let shim = shim_binary().display().to_string();
    let namespace = unique("kt-bad");
    let id = unique("kt-shim-bad");
    let dir = tempfile::Builder::new()
        .prefix("kt-shim-bad-")
        .tempdir()
        .unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    // The shim's own log (containerd gives a FIFO; a file works the same).
    std::fs::write(bundle.join("log"), "").unwrap();
    let address = start_own_shim(&shim, &namespace, &id, &bundle);
    let shim_pid: i32 = std::fs::read_to_string(bundle.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let client = task_client(&address);
    let create = |bundle: &Path, rootfs: Vec<api::Mount>| {
        client.create(
            ctx(),
            &api::CreateTaskRequest {
                id: id.clone(),
                bundle: bundle.display().to_string(),
                rootfs,
                ..Default::default()
            },
        )
    };

    let (code, msg) = status_of(client.create(
        ctx(),
        &api::CreateTaskRequest {
            id: id.clone(),
            bundle: bundle.display().to_string(),
            checkpoint: "/tmp/kt-no-checkpoint".into(),
            ..Default::default()
        },
    ));
    assert_eq!(code, ttrpc::Code::UNIMPLEMENTED, "{msg}");
    assert!(msg.contains("not implemented"), "{msg}");

    let missing = dir.path().join("no-such-bundle");
    let (code, msg) = status_of(create(&missing, vec![]));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("no-such-bundle"), "{msg}");

    let (code, msg) = status_of(create(&bundle, vec![]));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("config.json"), "{msg}");

    // A config whose root.path names nothing, and no rootfs mounts.
    Cmd::new(kapsel_integration_tests::env::runtime_binary())
        .arg("spec")
        .current_dir(&bundle)
        .ok();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["root"]["path"] = serde_json::json!("rootfs");
    config["process"]["terminal"] = serde_json::json!(false);
    config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{namespace}/{id}"));
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (code, msg) = status_of(create(&bundle, vec![]));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("rootfs"), "{msg}");

    // Rootfs mounts in the request, but no mount point.
    let fixture = Fixtures::get().rootfs();
    let bind = api::Mount {
        type_: "bind".into(),
        source: fixture.display().to_string(),
        options: vec!["rbind".into(), "ro".into()],
        ..Default::default()
    };
    let (code, msg) = status_of(create(&bundle, vec![bind.clone()]));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("mount point"), "{msg}");

    // A mount the kernel refuses: the error names it, nothing stays mounted.
    std::fs::create_dir(bundle.join("rootfs")).unwrap();
    let bogus = api::Mount {
        type_: "kt-no-such-fs".into(),
        source: "none".into(),
        ..Default::default()
    };
    let (code, msg) = status_of(create(&bundle, vec![bind.clone(), bogus]));
    assert_eq!(code, ttrpc::Code::UNKNOWN, "{msg}");
    assert!(msg.contains("kt-no-such-fs"), "{msg}");
    assert_eq!(mounts_below(&bundle), Vec::<String>::new());

    // The runtime refuses the config: its message comes back, the rootfs is unmounted.
    config["process"]["args"] = serde_json::json!([]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (code, msg) = status_of(create(&bundle, vec![bind.clone()]));
    eprintln!("runtime refusal: {code:?} {msg}");
    assert_eq!(code, ttrpc::Code::UNKNOWN, "{msg}");
    assert!(msg.contains("args"), "{msg}");
    assert_eq!(mounts_below(&bundle), Vec::<String>::new());
    let state = Path::new("/run/kapsel/shim-runtime")
        .join(&namespace)
        .join(&id);
    assert!(!state.exists(), "runtime state left: {}", state.display());
    assert_eq!(
        kapsel_integration_tests::host::processes_using(&fixture),
        Vec::<i32>::new(),
        "processes left in the rootfs"
    );

    // Nothing was created: calls about the task say so.
    let (code, msg) = status_of(client.state(
        ctx(),
        &api::StateRequest {
            id: id.clone(),
            ..Default::default()
        },
    ));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    let (code, msg) = status_of(client.state(
        ctx(),
        &api::StateRequest {
            id: "someone-else".into(),
            ..Default::default()
        },
    ));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("someone-else"), "{msg}");

    // Shutdown without a task ends the shim; later calls fail, the socket goes.
    client
        .shutdown(
            ctx(),
            &api::ShutdownRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    match client.connect(
        ctx(),
        &api::ConnectRequest {
            id: id.clone(),
            ..Default::default()
        },
    ) {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), ttrpc::Code::UNAVAILABLE, "{s:?}");
            assert!(s.message.contains("shutting down"), "{s:?}");
        }
        Err(e) => eprintln!("after Shutdown: {e:?} (the shim was already gone)"),
        Ok(r) => panic!("a call after Shutdown succeeded: {r:?}"),
    }
    assert!(
        wait_until(Duration::from_secs(10), || !pid_alive(shim_pid)),
        "shim {shim_pid} still running after Shutdown"
    );
    let socket = address.trim_start_matches("unix://");
    assert!(!Path::new(socket).exists(), "socket {socket} left");
    let log = std::fs::read_to_string(bundle.join("log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir(Path::new("/run/kapsel/shim-runtime").join(&namespace));
}

// ---------------------------------------------------------------------------------------------
// Faults: containerd restarted, the shim killed, many containers at once.

fn with_containerd_mut(f: impl FnOnce(&mut Containerd, &str)) {
    with_containerd(|_, _| {});
    let mut guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let c = guard.as_mut().expect("containerd");
    f(c, &shim_binary().display().to_string())
}

/// Live shim processes (ours or runc's) serving container `id` of containerd `c`.
fn shim_pids(c: &Containerd, which: Which, id: &str) -> Vec<i32> {
    let binary = match which {
        Which::Kapsel => "containerd-shim-kapsel-v2",
        Which::Runc => "containerd-shim-runc-v2",
    };
    let ns = format!("-namespace {} ", c.namespace());
    let id_flag = format!("-id {id}");
    pids_matching(|cmd| {
        cmd.contains(binary)
            && cmd.contains(&ns)
            && (cmd.ends_with(&id_flag) || cmd.contains(&format!("{id_flag} ")))
    })
    .into_iter()
    .filter(|p| pid_alive(*p))
    .collect()
}

/// Kill, delete and remove container `id`, then check that nothing of it is left: no task, no
/// shim, no process, no mount, no runtime state, no bundle.
#[track_caller]
fn remove_and_check_nothing_left(c: &Containerd, which: Which, id: &str, pid: i32) {
    if task_status(c, id).as_deref() == Some("RUNNING") {
        c.ctr(&["task", "kill", "-s", "KILL", id]).ok();
        wait_stopped(c, id);
    }
    if task_status(c, id).is_some() {
        c.ctr(&["task", "rm", id]).ok();
    }
    c.ctr(&["container", "rm", id]).ok();
    assert!(
        wait_until(Duration::from_secs(10), || shim_pids(c, which, id)
            .is_empty()),
        "{which:?}: shim of {id} still running: {:?}",
        shim_pids(c, which, id)
    );
    assert!(
        !pid_alive(pid),
        "{which:?}: container process {pid} of {id} alive"
    );
    let bundle = c.bundle_dir(id);
    assert_eq!(mounts_below(&bundle), Vec::<String>::new(), "{which:?}");
    assert!(
        !bundle.exists(),
        "{which:?}: bundle {} left",
        bundle.display()
    );
    let state = which.state_dir(c, id);
    assert!(
        !state.exists(),
        "{which:?}: runtime state {} left",
        state.display()
    );
    let socket = shim_socket(c, id);
    if which == Which::Runc && socket.exists() {
        // runc's shim leaves its socket when it dies by SIGKILL (its `delete` does not
        // remove it): a difference, not ours to fail; the file goes so that /run stays clean.
        eprintln!("{which:?}: left its socket {}", socket.display());
        let _ = std::fs::remove_file(&socket);
    }
    assert!(
        !socket.exists(),
        "{which:?}: shim socket {} left",
        socket.display()
    );
}

/// Where containerd 1.6's shims put their socket for container `id` (not grouped):
/// `/run/containerd/s/<sha256 of "<containerd address>/<namespace>/<id>">`.
fn shim_socket(c: &Containerd, id: &str) -> PathBuf {
    let key = c.socket().join(c.namespace()).join(id);
    let out = Cmd::new("sh")
        .args([
            "-c",
            "printf %s \"$1\" | sha256sum",
            "sh",
            key.to_str().unwrap(),
        ])
        .ok();
    let hex = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Path::new("/run/containerd/s").join(hex)
}

#[test]
fn shim_tasks_survive_a_containerd_restart() {
    with_containerd_mut(|c, shim| {
        let ids: Vec<(Which, String)> = BOTH
            .iter()
            .map(|w| (*w, unique(&format!("kt-shim-rs-{w:?}").to_lowercase())))
            .collect();
        for (which, id) in &ids {
            run_with(c, shim, *which, &["-d"], id, &["sleep", "1000"]).ok();
        }
        let pids: Vec<i32> = ids.iter().map(|(_, id)| task_pid(c, id)).collect();
        c.restart();
        let c: &Containerd = c;
        for ((which, id), pid) in ids.iter().zip(&pids) {
            assert_eq!(
                task_status(c, id).as_deref(),
                Some("RUNNING"),
                "{which:?}: after restart\n{}",
                c.log()
            );
            assert_eq!(task_pid(c, id), *pid, "{which:?}");
            // The reconnected shim still serves calls.
            let out = c
                .ctr(&[
                    "task",
                    "exec",
                    "--exec-id",
                    "after",
                    id,
                    "sh",
                    "-c",
                    "exit 6",
                ])
                .timeout(Duration::from_secs(30))
                .output();
            assert_eq!(out.code, Some(6), "{which:?}: {out}");
            remove_and_check_nothing_left(c, *which, id, *pid);
        }
    });
}

#[test]
fn shim_killed_with_sigkill_leaves_nothing_behind() {
    with_containerd(|c, shim| {
        for which in BOTH {
            let id = unique(&format!("kt-shim-k9-{which:?}").to_lowercase());
            let _guard = CtrContainer { c, id: id.clone() };
            let events = EventLog::start(c);
            run_with(c, shim, which, &["-d"], &id, &["sleep", "1000"]).ok();
            let pid = task_pid(c, &id);
            let shims = shim_pids(c, which, &id);
            assert_eq!(shims.len(), 1, "{which:?}: {shims:?}");
            assert!(
                !mounts_below(&c.bundle_dir(&id)).is_empty(),
                "{which:?}: no rootfs mount"
            );
            signal(shims[0], libc::SIGKILL);
            assert!(
                wait_until(Duration::from_secs(20), || task_status(c, &id).as_deref()
                    != Some("RUNNING")),
                "{which:?}: task still running after its shim was killed\n{}",
                c.log()
            );
            assert!(
                wait_until(Duration::from_secs(10), || !pid_alive(pid)),
                "{which:?}: container process {pid} outlived its shim"
            );
            let events = events.stop();
            let topics = task_topics(&events, &id);
            eprintln!("{which:?}: {topics:?}, task now {:?}", task_status(c, &id));
            assert!(
                topics.iter().any(|t| t == "/tasks/exit"),
                "{which:?}: {topics:?}"
            );
            remove_and_check_nothing_left(c, which, &id, pid);
        }
    });
}

#[test]
fn shim_fifty_containers_at_once() {
    const N: usize = 50;
    with_containerd(|c, shim| {
        for which in BOTH {
            let ids: Vec<String> = (0..N)
                .map(|_| unique(&format!("kt-shim-50-{which:?}").to_lowercase()))
                .collect();
            let guards: Vec<CtrContainer> = ids
                .iter()
                .map(|id| CtrContainer { c, id: id.clone() })
                .collect();
            let started = std::time::Instant::now();
            for id in &ids {
                run_with(c, shim, which, &["-d"], id, &["sleep", "1000"]).ok();
            }
            let took = started.elapsed();
            let ls = c.ctr(&["task", "ls"]).ok().stdout;
            let running = ids
                .iter()
                .filter(|id| {
                    ls.lines()
                        .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING"))
                })
                .count();
            assert_eq!(running, N, "{which:?}:\n{ls}");
            let shims: usize = ids.iter().map(|id| shim_pids(c, which, id).len()).sum();
            assert_eq!(shims, N, "{which:?}: one shim per container");
            eprintln!("{which:?}: {N} × ctr run -d in {took:?}");
            let pids: Vec<i32> = ids.iter().map(|id| task_pid(c, id)).collect();
            for id in &ids {
                c.ctr(&["task", "kill", "-s", "KILL", id]).ok();
            }
            for (id, pid) in ids.iter().zip(pids) {
                wait_stopped(c, id);
                remove_and_check_nothing_left(c, which, id, pid);
            }
            drop(guards);
        }
    });
}

#[test]
fn shim_is_shared_by_containers_of_one_sandbox() {
    with_containerd(|c, shim| {
        for which in BOTH {
            let tag = format!("{which:?}").to_lowercase();
            let sandbox = unique(&format!("kt-pod-{tag}"));
            let annotation = format!("io.kubernetes.cri.sandbox-id={sandbox}");
            let ids = [
                unique(&format!("kt-shim-g1-{tag}")),
                unique(&format!("kt-shim-g2-{tag}")),
            ];
            let _guards: Vec<CtrContainer> = ids
                .iter()
                .map(|id| CtrContainer { c, id: id.clone() })
                .collect();
            for id in &ids {
                run_with(
                    c,
                    shim,
                    which,
                    &["-d", "--annotation", &annotation],
                    id,
                    &["sleep", "1000"],
                )
                .ok();
            }
            let shims: Vec<Vec<i32>> = ids
                .iter()
                .map(|id| {
                    // The shim's command line names the first container of the group.
                    let mut p = shim_pids(c, which, &ids[0]);
                    p.extend(shim_pids(c, which, id));
                    p.sort();
                    p.dedup();
                    p
                })
                .collect();
            assert_eq!(shims[0].len(), 1, "{which:?}: {shims:?}");
            assert_eq!(shims[0], shims[1], "{which:?}: one shim for the sandbox");
            let shim_pid = shims[0][0];
            let a0 = std::fs::read_to_string(c.bundle_dir(&ids[0]).join("address")).unwrap();
            let a1 = std::fs::read_to_string(c.bundle_dir(&ids[1]).join("address")).unwrap();
            assert_eq!(a0, a1, "{which:?}");
            for (n, id) in ids.iter().enumerate() {
                let out = c
                    .ctr(&[
                        "task",
                        "exec",
                        "--exec-id",
                        "x",
                        id,
                        "sh",
                        "-c",
                        &format!("exit {}", n + 3),
                    ])
                    .timeout(Duration::from_secs(30))
                    .output();
                assert_eq!(out.code, Some(n as i32 + 3), "{which:?}: {out}");
            }
            // The first container goes; the shim stays for the second.
            let pid0 = task_pid(c, &ids[0]);
            let pid1 = task_pid(c, &ids[1]);
            c.ctr(&["task", "kill", "-s", "KILL", &ids[0]]).ok();
            wait_stopped(c, &ids[0]);
            c.ctr(&["task", "rm", &ids[0]]).ok();
            c.ctr(&["container", "rm", &ids[0]]).ok();
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                pid_alive(shim_pid),
                "{which:?}: the shared shim left with the first container"
            );
            assert_eq!(
                task_status(c, &ids[1]).as_deref(),
                Some("RUNNING"),
                "{which:?}"
            );
            assert!(!pid_alive(pid0), "{which:?}");
            remove_and_check_nothing_left(c, which, &ids[1], pid1);
            assert!(
                wait_until(Duration::from_secs(10), || !pid_alive(shim_pid)),
                "{which:?}: shared shim {shim_pid} still running after its last container"
            );
        }
    });
}

#[test]
fn shim_kill_all_reaches_every_process() {
    with_containerd(|c, shim| {
        for which in BOTH {
            let id = unique(&format!("kt-shim-ka-{which:?}").to_lowercase());
            let _guard = CtrContainer { c, id: id.clone() };
            run_with(c, shim, which, &["-d"], &id, &["sleep", "1000"]).ok();
            c.ctr(&[
                "task",
                "exec",
                "-d",
                "--exec-id",
                "bg",
                &id,
                "sleep",
                "1000",
            ])
            .timeout(Duration::from_secs(30))
            .ok();
            let ps = c.ctr(&["task", "ps", &id]).ok().stdout;
            let pids: Vec<i32> = ps
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .collect();
            assert_eq!(pids.len(), 2, "{which:?}: init and exec expected:\n{ps}");
            c.ctr(&["task", "kill", "--all", "-s", "KILL", &id]).ok();
            wait_stopped(c, &id);
            for pid in &pids {
                assert!(
                    wait_until(Duration::from_secs(10), || !pid_alive(*pid)),
                    "{which:?}: {pid} survived kill --all"
                );
            }
            remove_and_check_nothing_left(c, which, &id, pids[0]);
        }
    });
}

/// Open a FIFO without blocking (a reader before any writer, or a writer once a reader exists).
fn open_fifo_result(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

fn open_fifo(path: &Path, write: bool) -> std::fs::File {
    open_fifo_result(path, write).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

#[test]
fn shim_close_io_ends_stdin_while_the_client_holds_its_fifo() {
    with_containerd(|c, shim| {
        for which in BOTH {
            let id = unique(&format!("kt-shim-cio-{which:?}").to_lowercase());
            let _guard = CtrContainer { c, id: id.clone() };
            run_with(c, shim, which, &["-d"], &id, &["sleep", "1000"]).ok();
            let address = std::fs::read_to_string(c.bundle_dir(&id).join("address")).unwrap();
            let client = task_client(address.trim());
            let dir = tempfile::Builder::new()
                .prefix("kt-cio-")
                .tempdir()
                .unwrap();
            let (stdin, stdout, stderr) = (
                dir.path().join("in"),
                dir.path().join("out"),
                dir.path().join("err"),
            );
            // runc's shim wants all three.
            for f in [&stdin, &stdout, &stderr] {
                let p = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
                // SAFETY: p is a valid NUL-terminated path for the duration of the call.
                assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o600) }, 0);
            }
            let mut out = open_fifo(&stdout, false);
            let _err = open_fifo(&stderr, false);
            client
                .exec(
                    ctx(),
                    &api::ExecProcessRequest {
                        id: id.clone(),
                        exec_id: "cat".into(),
                        stdin: stdin.display().to_string(),
                        stdout: stdout.display().to_string(),
                        stderr: stderr.display().to_string(),
                        spec: Some(exec_spec(&["cat"])).into(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Exec: {e:?}"));
            let exec_req = |exec_id: &str| api::StartRequest {
                id: id.clone(),
                exec_id: exec_id.into(),
                ..Default::default()
            };
            client
                .start(ctx(), &exec_req("cat"))
                .unwrap_or_else(|e| panic!("{which:?} Start: {e:?}"));
            let wait_req = api::WaitRequest {
                id: id.clone(),
                exec_id: "cat".into(),
                ..Default::default()
            };
            // The client writes and keeps its end open ...
            // The shim may open its reading end just after Start returns (ENXIO until then).
            let mut writer = None;
            wait_until(Duration::from_secs(5), || {
                writer = open_fifo_result(&stdin, true).ok();
                writer.is_some()
            });
            assert!(
                writer.is_some(),
                "{which:?}: nobody reads {}",
                stdin.display()
            );
            if let Some(w) = writer.as_mut() {
                std::io::Write::write_all(w, b"through close-io\n").unwrap();
            }
            let early = client.wait(ttrpc::context::with_timeout(500_000_000), &wait_req);
            assert!(
                early.is_err(),
                "{which:?}: stdin ended by itself: {early:?}"
            );
            // ... CloseIO ends the input (ours at once; runc's shim once the client has
            // closed its end too).
            client
                .close_io(
                    ctx(),
                    &api::CloseIORequest {
                        id: id.clone(),
                        exec_id: "cat".into(),
                        stdin: true,
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} CloseIO: {e:?}"));
            if which == Which::Runc {
                writer = None;
            }
            let w = client
                .wait(ctx(), &wait_req)
                .unwrap_or_else(|e| panic!("{which:?} Wait: {e:?}"));
            assert_eq!(w.exit_status, 0, "{which:?}");
            let mut got = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut got);
            assert_eq!(got, "through close-io\n", "{which:?}");
            drop(writer);
            client
                .delete(
                    ctx(),
                    &api::DeleteRequest {
                        id: id.clone(),
                        exec_id: "cat".into(),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{which:?} Delete: {e:?}"));
        }
    });
}

#[test]
fn shim_exec_with_a_terminal() {
    require_program("script", "bsdutils");
    with_containerd(|c, shim| {
        let id = unique("kt-shim-xtty");
        let _guard = CtrContainer { c, id: id.clone() };
        ctr_run(c, shim, &["-d"], &id, &["sleep", "1000"]).ok();
        let ctr = format!(
            "stty cols 77 rows 21; ctr -a {} -n {} task exec -t --exec-id t1 {id} \
             sh -c 'sleep 0.3; tty; stty size; exit 7'",
            c.socket().display(),
            c.namespace()
        );
        let out = Cmd::new("script")
            .args(["-qec", &ctr, "/dev/null"])
            .timeout(Duration::from_secs(60))
            .output();
        assert_eq!(out.code, Some(7), "{out}\ncontainerd log:\n{}", c.log());
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
        assert!(out.stdout.contains("21 77"), "{out}");
        assert_eq!(task_status(c, &id).as_deref(), Some("RUNNING"));
    });
}

#[test]
fn shim_log_uris_file_and_binary() {
    with_containerd(|c, shim| {
        for which in BOTH {
            let tag = format!("{which:?}").to_lowercase();
            let dir = tempfile::Builder::new()
                .prefix("kt-shim-log-")
                .tempdir()
                .unwrap();

            // file://: both streams appended to one file.
            let id = unique(&format!("kt-shim-lf-{tag}"));
            let _guard = CtrContainer { c, id: id.clone() };
            let file = dir.path().join("sub/container.log");
            let uri = format!("file://{}", file.display());
            let out = run_with(
                c,
                shim,
                which,
                &["--rm", "--log-uri", &uri],
                &id,
                &[
                    "sh",
                    "-c",
                    "echo to-out; echo to-err >&2; grep SigBlk /proc/self/status; exit 4",
                ],
            )
            .output();
            assert_eq!(out.code, Some(4), "{which:?}: {out}\n{}", c.log());
            // runc's shim copies the two streams on their own goroutines and may still be
            // writing when `ctr run` returns: wait for both lines rather than read once.
            let read_log = || std::fs::read_to_string(&file).unwrap_or_default();
            let complete =
                |t: &str| t.contains("to-out") && t.contains("to-err") && t.contains("SigBlk");
            wait_until(Duration::from_secs(10), || complete(&read_log()));
            let text = read_log();
            assert!(complete(&text), "{which:?}: {file:?}: {text:?}");
            // The container starts with no signal blocked (the shim blocks SIGCHLD for itself).
            assert!(
                text.contains("SigBlk:\t0000000000000000"),
                "{which:?}: {text:?}"
            );

            // binary://: containerd's logging contract (fds 3, 4; ready = close fd 5).
            let id = unique(&format!("kt-shim-lb-{tag}"));
            let _guard = CtrContainer { c, id: id.clone() };
            let logger = dir.path().join("logger.sh");
            std::fs::write(
                &logger,
                "#!/bin/sh\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" > \"$2.who\"\n\
                 exec 5>&- 6<&3 7<&4 3<&- 4<&-\n\
                 cat <&6 > \"$2.out\" & cat <&7 > \"$2.err\" & wait\ntouch \"$2.done\"\n",
            )
            .unwrap();
            Cmd::new("chmod").args(["755"]).arg(&logger).ok();
            let base = dir.path().join("bin");
            let uri = format!("binary://{}?base={}", logger.display(), base.display());
            let out = run_with(
                c,
                shim,
                which,
                &["--rm", "--log-uri", &uri],
                &id,
                &["sh", "-c", "echo b-out; echo b-err >&2"],
            )
            .output();
            assert!(out.success(), "{which:?}: {out}\n{}", c.log());
            let read =
                |ext: &str| std::fs::read_to_string(base.with_extension(ext)).unwrap_or_default();
            assert!(
                wait_until(Duration::from_secs(10), || read("out") == "b-out\n"
                    && read("err") == "b-err\n"),
                "{which:?}: logger got {:?} and {:?}",
                read("out"),
                read("err")
            );
            // Ours lets the logger drain and end on its own; runc's shim stops it with SIGTERM.
            if which == Which::Kapsel {
                let done = base.with_extension("done");
                assert!(
                    wait_until(Duration::from_secs(10), || done.exists()),
                    "{which:?}: logger did not finish"
                );
            }
            assert_eq!(
                read("who").trim(),
                format!("{}/{id}", c.namespace()),
                "{which:?}"
            );
        }
    });
}

#[test]
fn shim_runs_the_runtime_its_runc_options_name() {
    require_root();
    let shim = shim_binary().display().to_string();
    let namespace = unique("kt-opt");
    let id = unique("kt-shim-opt");
    let dir = tempfile::Builder::new()
        .prefix("kt-shim-opt-")
        .tempdir()
        .unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    Cmd::new(kapsel_integration_tests::RUNC)
        .arg("spec")
        .current_dir(&bundle)
        .ok();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    // runc wants the real path (.fixtures may be a symlink).
    let rootfs = std::fs::canonicalize(Fixtures::get().rootfs()).unwrap();
    config["root"]["path"] = serde_json::json!(rootfs);
    config["root"]["readonly"] = serde_json::json!(true);
    config["process"]["terminal"] = serde_json::json!(false);
    config["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{namespace}/{id}"));
    std::fs::write(&config_path, config.to_string()).unwrap();

    let address = start_own_shim(&shim, &namespace, &id, &bundle);
    let client = task_client(&address);
    let runc_root = dir.path().join("runc-root");
    let mut options = containerd_shim_protos::shim::oci::Options::new();
    options.binary_name = kapsel_integration_tests::RUNC.into();
    options.root = runc_root.display().to_string();
    options.no_new_keyring = true;
    let mut any = Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = options.write_to_bytes().unwrap();
    let runc_state = || {
        Cmd::new(kapsel_integration_tests::RUNC)
            .arg("--root")
            .arg(runc_root.join(&namespace))
            .args(["state", &id])
            .output()
    };

    let created = client.create(
        ctx(),
        &api::CreateTaskRequest {
            id: id.clone(),
            bundle: bundle.display().to_string(),
            options: Some(any).into(),
            ..Default::default()
        },
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pid = created
            .unwrap_or_else(|e| panic!("Create with runc options: {e:?}"))
            .pid;
        // runc, under the root the options named, holds the container.
        let state = runc_state();
        assert!(state.success(), "{state}");
        assert!(state.stdout.contains("\"created\""), "{state}");
        let task = |exec_id: &str| api::StartRequest {
            id: id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        client.start(ctx(), &task("")).unwrap();
        assert!(runc_state().stdout.contains("\"running\""));
        client
            .kill(
                ctx(),
                &api::KillRequest {
                    id: id.clone(),
                    signal: 9,
                    ..Default::default()
                },
            )
            .unwrap();
        let w = client
            .wait(
                ctx(),
                &api::WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(w.exit_status, 137);
        let d = client
            .delete(
                ctx(),
                &api::DeleteRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(d.pid, pid);
        let state = runc_state();
        assert!(!state.success(), "runc still has the container: {state}");
    }));
    let _ = client.shutdown(
        ctx(),
        &api::ShutdownRequest {
            id: id.clone(),
            now: true,
            ..Default::default()
        },
    );
    kapsel_integration_tests::daemon::remove_cgroup_tree(&format!("/{namespace}"));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
