//! podman 4.3 (through conmon) driving the runtime under test (`--runtime`).
//! One private store for the file; tests take turns; cleaned up at exit.

use std::sync::Mutex;

use kapsel_integration_tests::clients::Podman;
use kapsel_integration_tests::env::runtime_binary;
use kapsel_integration_tests::{parse_cap_hex, proc_status_field, unique, Cmd, Fixtures};

const IMAGE: &str = "docker.io/library/busybox:latest";

static PODMAN: Mutex<Option<Podman>> = Mutex::new(None);

extern "C" fn clean_at_exit() {
    let mut guard = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut p) = guard.take() {
        p.clean();
    }
}

fn with_podman(f: impl FnOnce(&Podman)) {
    let mut guard = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let archive = Fixtures::get().oci_archive();
        // SAFETY: atexit registers a plain extern "C" function with no arguments.
        assert_eq!(unsafe { libc::atexit(clean_at_exit) }, 0, "atexit");
        *guard = Some(Podman::new(&runtime_binary(), &archive));
    }
    f(guard.as_ref().expect("podman"))
}

fn run(p: &Podman, extra: &[&str], cmd: &[&str]) -> Cmd {
    p.cmd(&["run"])
        .args(p.run_flags())
        .args(extra)
        .arg(IMAGE)
        .args(cmd)
}

#[test]
fn podman_run_rm_echo() {
    with_podman(|p| {
        let out = run(p, &["--rm"], &["echo", "hi"]).output();
        assert!(out.success(), "podman run:\n{out}");
        assert_eq!(out.stdout, "hi\n", "{out}");
    });
}

#[test]
fn podman_run_passes_the_exit_code() {
    with_podman(|p| {
        let out = run(p, &["--rm"], &["sh", "-c", "exit 7"]).output();
        assert_eq!(out.code, Some(7), "{out}");
    });
}

#[test]
fn podman_detached_exec_stop_rm() {
    with_podman(|p| {
        let name = unique("kt-pod");
        let out = run(p, &["-d", "--name", &name], &["sleep", "1000"]).output();
        assert!(out.success(), "podman run -d:\n{out}");
        let out = p.cmd(&["exec", &name, "echo", "hi"]).output();
        assert!(out.success(), "podman exec:\n{out}");
        assert_eq!(out.stdout, "hi\n");
        let out = p.cmd(&["exec", &name, "sh", "-c", "exit 3"]).output();
        assert_eq!(out.code, Some(3), "podman exec exit code:\n{out}");
        // The runtime under test holds it (in its default --root).
        let id = p
            .cmd(&["inspect", "--format", "{{.Id}}", &name])
            .ok()
            .stdout;
        let id = id.trim().to_string();
        let runtime_ids = || Cmd::new(runtime_binary()).args(["list", "-q"]).ok().stdout;
        assert!(
            runtime_ids().lines().any(|l| l == id),
            "{id} not in `list`:\n{}",
            runtime_ids()
        );
        // sleep as pid 1 ignores SIGTERM: stop falls back to SIGKILL after 1 s.
        p.cmd(&["stop", "-t", "1", &name]).ok();
        let status = p
            .cmd(&[
                "ps",
                "-a",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Status}}",
            ])
            .ok()
            .stdout;
        assert!(
            status.starts_with("Exited"),
            "status after stop: {status:?}"
        );
        p.cmd(&["rm", &name]).ok();
        let left = p
            .cmd(&["ps", "-aq", "--filter", &format!("name={name}")])
            .ok()
            .stdout;
        assert!(left.trim().is_empty(), "container left: {left:?}");
        assert!(!runtime_ids().contains(&id), "runtime state left for {id}");
    });
}

#[test]
fn podman_memory_limit_is_seen_inside() {
    with_podman(|p| {
        let out = run(
            p,
            &["--rm", "-m", "64m", "--pids-limit", "20"],
            &[
                "cat",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/pids/pids.max",
            ],
        )
        .output();
        assert!(out.success(), "{out}");
        assert_eq!(out.stdout, "67108864\n20\n", "{out}");
    });
}

#[test]
fn podman_privileged_gets_the_hosts_capabilities() {
    with_podman(|p| {
        let out = run(
            p,
            &["--rm", "--privileged"],
            &["grep", "CapEff", "/proc/self/status"],
        )
        .output();
        assert!(out.success(), "podman run --privileged:\n{out}");
        let inside = parse_cap_hex(out.stdout.trim().trim_start_matches("CapEff:"));
        let host = parse_cap_hex(&proc_status_field(std::process::id() as i32, "CapEff").unwrap());
        assert_eq!(inside, host, "{out}");
    });
}
