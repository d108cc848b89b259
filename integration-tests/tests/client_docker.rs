//! dockerd 20.10 driving the runtime under test as `--runtime kapsel`
//! (`--add-runtime kapsel=$KAPSEL_RUNTIME`, through its containerd's runc shim).
//! One daemon for the file; tests take turns; stopped and cleaned up at exit.

use std::sync::Mutex;

use kapsel_integration_tests::clients::Dockerd;
use kapsel_integration_tests::env::runtime_binary;
use kapsel_integration_tests::{
    kapsel_only, parse_cap_hex, proc_status_field, unique, Cmd, Fixtures, Runtime,
};

static DOCKERD: Mutex<Option<Dockerd>> = Mutex::new(None);

extern "C" fn stop_at_exit() {
    let mut guard = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut d) = guard.take() {
        d.stop();
    }
}

fn with_dockerd(f: impl FnOnce(&Dockerd)) {
    let mut guard = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let archive = Fixtures::get().docker_archive();
        // SAFETY: atexit registers a plain extern "C" function with no arguments.
        assert_eq!(unsafe { libc::atexit(stop_at_exit) }, 0, "atexit");
        *guard = Some(Dockerd::start(&runtime_binary(), &archive));
    }
    f(guard.as_ref().expect("dockerd"))
}

fn run(d: &Dockerd, extra: &[&str], cmd: &[&str]) -> Cmd {
    d.docker(&["run", "--runtime", "kapsel"])
        .args(extra)
        .arg("busybox")
        .args(cmd)
}

/// Removes the named container when the test ends.
struct Named<'a>(&'a Dockerd, String);

impl Drop for Named<'_> {
    fn drop(&mut self) {
        let _ = self.0.docker(&["rm", "-f", &self.1]).output_result();
    }
}

#[test]
fn docker_run_rm_echo() {
    with_dockerd(|d| {
        let out = run(d, &["--rm"], &["echo", "hi"]).output();
        assert!(
            out.success(),
            "docker run:\n{out}\ndockerd log tail:\n{}",
            tail(&d.log())
        );
        assert_eq!(out.stdout, "hi\n", "{out}");
    });
}

#[test]
fn docker_run_passes_the_exit_code() {
    with_dockerd(|d| {
        let out = run(d, &["--rm"], &["sh", "-c", "exit 7"]).output();
        assert_eq!(out.code, Some(7), "{out}");
    });
}

#[test]
fn docker_resource_limits_are_seen_inside() {
    with_dockerd(|d| {
        let out = run(
            d,
            &[
                "--rm",
                "-m",
                "64m",
                "--cpu-shares",
                "512",
                "--pids-limit",
                "20",
            ],
            &[
                "cat",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/cpu/cpu.shares",
                "/sys/fs/cgroup/pids/pids.max",
            ],
        )
        .output();
        assert!(out.success(), "{out}");
        assert_eq!(out.stdout, "67108864\n512\n20\n", "{out}");
    });
}

#[test]
fn docker_exec_update_stop_rm() {
    with_dockerd(|d| {
        let name = unique("kt-dock");
        let _guard = Named(d, name.clone());
        let out = run(d, &["-d", "--name", &name, "-m", "64m"], &["sleep", "1000"]).output();
        assert!(out.success(), "docker run -d:\n{out}");
        let out = d.docker(&["exec", &name, "echo", "hi"]).output();
        assert!(out.success(), "docker exec:\n{out}");
        assert_eq!(out.stdout, "hi\n");
        let out = d.docker(&["exec", &name, "sh", "-c", "exit 4"]).output();
        assert_eq!(out.code, Some(4), "docker exec exit code:\n{out}");

        // docker update -> containerd Update -> shim -> `<runtime> update -r -`
        d.docker(&["update", "--cpu-shares", "256", "--pids-limit", "30", &name])
            .ok();
        let out = d
            .docker(&[
                "exec",
                &name,
                "cat",
                "/sys/fs/cgroup/cpu/cpu.shares",
                "/sys/fs/cgroup/pids/pids.max",
            ])
            .ok();
        assert_eq!(
            out.stdout, "256\n30\n",
            "limits after docker update:\n{out}"
        );

        d.docker(&["pause", &name]).ok();
        let state = d
            .docker(&["inspect", "-f", "{{.State.Status}}", &name])
            .ok()
            .stdout;
        assert_eq!(state.trim(), "paused");
        d.docker(&["unpause", &name]).ok();
        let state = d
            .docker(&["inspect", "-f", "{{.State.Status}}", &name])
            .ok()
            .stdout;
        assert_eq!(state.trim(), "running");

        d.docker(&["stop", "-t", "1", &name]).ok();
        let state = d
            .docker(&["inspect", "-f", "{{.State.Status}}", &name])
            .ok()
            .stdout;
        assert_eq!(state.trim(), "exited");
        d.docker(&["rm", &name]).ok();
    });
}

#[test]
fn kapsel_docker_privileged_works() {
    // docker --privileged asks for every capability, CAP_SYS_RESOURCE included,
    // which this machine's bounding set lacks: runc fails ("unable to apply caps"),
    // kapsel leaves out what the host does not have and runs.
    let rt = Runtime::new();
    if !kapsel_only(&rt) {
        return;
    }
    with_dockerd(|d| {
        let out = run(
            d,
            &["--rm", "--privileged"],
            &["grep", "Cap", "/proc/self/status"],
        )
        .output();
        assert!(out.success(), "docker run --privileged:\n{out}");
        // Docker 20.10's list of "all" capabilities ends at CAP_AUDIT_READ, so
        // expect what the host has of the usual privileged set, not the whole host set.
        let host = parse_cap_hex(&proc_status_field(std::process::id() as i32, "CapBnd").unwrap());
        let must = kapsel_integration_tests::cap_mask(&[
            "CAP_SYS_ADMIN",
            "CAP_NET_ADMIN",
            "CAP_MKNOD",
            "CAP_SYS_PTRACE",
            "CAP_DAC_READ_SEARCH",
            "CAP_AUDIT_READ",
        ]);
        for field in ["CapBnd", "CapEff", "CapPrm"] {
            let value = parse_cap_hex(kapsel_integration_tests::status_field(&out.stdout, field));
            assert_eq!(value & !host, 0, "{field} has caps the host lacks:\n{out}");
            assert_eq!(value & must, must, "{field} lacks privileged caps:\n{out}");
        }
    });
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
