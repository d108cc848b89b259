//! containerd 1.6 (`ctr`) driving the runtime under test through its runc shim
//! (`ctr run --runc-binary $KAPSEL_RUNTIME`).
//!
//! One containerd serves every test of this file; the tests take turns (a
//! mutex) and the daemon is stopped, with its shims, cgroups and temp dir, when
//! the test process exits (atexit), whichever tests ran.
//! Not covered: `ctr task update` — ctr 1.6 has no such command (the docker
//! tests exercise `update` through dockerd instead).

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use kapsel_integration_tests::clients::{Containerd, BUSYBOX_IMAGE};
use kapsel_integration_tests::env::runtime_binary;
use kapsel_integration_tests::host::{cgroup_dir, cgroup_procs};
use kapsel_integration_tests::{
    parse_cap_hex, proc_status_field, require_program, unique, wait_until, Cmd, Fixtures, SETTLE,
};

static DAEMON: Mutex<Option<Containerd>> = Mutex::new(None);

extern "C" fn stop_daemon_at_exit() {
    let mut guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut c) = guard.take() {
        c.stop();
    }
}

/// Run `f` with the shared containerd (started, with the image imported, on first use).
fn with_containerd(f: impl FnOnce(&Containerd, &Ctx)) {
    let mut guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let fixtures = Fixtures::get();
        let archive = fixtures.oci_archive();
        // SAFETY: atexit registers a plain extern "C" function with no arguments.
        let rc = unsafe { libc::atexit(stop_daemon_at_exit) };
        assert_eq!(rc, 0, "atexit");
        let c = Containerd::start();
        c.import(&archive);
        *guard = Some(c);
    }
    let c = guard.as_ref().expect("containerd");
    let ctx = Ctx {
        runtime: runtime_binary(),
        runc_root: c.runc_root(),
    };
    f(c, &ctx)
}

struct Ctx {
    runtime: PathBuf,
    runc_root: PathBuf,
}

impl Ctx {
    /// `--runc-binary RUNTIME --runc-root ROOT`
    fn runtime_flags(&self) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.runtime.display().to_string(),
            "--runc-root".into(),
            self.runc_root.display().to_string(),
        ]
    }
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

fn ctr_run(c: &Containerd, ctx: &Ctx, extra: &[&str], id: &str, cmd: &[&str]) -> Cmd {
    c.ctr(&["run"])
        .args(extra)
        .args(ctx.runtime_flags())
        .arg(BUSYBOX_IMAGE)
        .arg(id)
        .args(cmd)
        .timeout(Duration::from_secs(60))
}

/// The task's status from `ctr task ls` (RUNNING, PAUSED, STOPPED...).
fn task_status(c: &Containerd, id: &str) -> Option<String> {
    let out = c.ctr(&["task", "ls"]).output();
    out.stdout.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
    })
}

#[test]
fn ctr_run_passes_output_and_exit_code() {
    require_program("ctr", "containerd");
    with_containerd(|c, ctx| {
        let id = unique("kt-ctr-run");
        let _guard = CtrContainer { c, id: id.clone() };
        let out = ctr_run(c, ctx, &["--rm"], &id, &["sh", "-c", "echo hi; exit 7"]).output();
        assert_eq!(
            out.code,
            Some(7),
            "ctr run exit code:\n{out}\ncontainerd log:\n{}",
            c.log()
        );
        assert_eq!(out.stdout, "hi\n", "{out}");
        // --rm: the container is gone.
        let ls = c.ctr(&["container", "ls", "-q"]).ok().stdout;
        assert!(!ls.lines().any(|l| l.trim() == id), "container left: {ls}");
    });
}

#[test]
fn ctr_detached_exec_ps_pause_resume_metrics_kill_rm() {
    with_containerd(|c, ctx| {
        let id = unique("kt-ctr-d");
        let _guard = CtrContainer { c, id: id.clone() };
        let out = ctr_run(c, ctx, &["-d"], &id, &["sleep", "1000"]).output();
        assert!(
            out.success(),
            "ctr run -d:\n{out}\ncontainerd log:\n{}",
            c.log()
        );
        assert_eq!(task_status(c, &id).as_deref(), Some("RUNNING"));

        // It really is the runtime under test that holds the container.
        let state_root = ctx.runc_root.join(c.namespace());
        let list = Cmd::new(&ctx.runtime)
            .arg("--root")
            .arg(&state_root)
            .args(["list", "-q"])
            .ok();
        assert!(
            list.stdout.lines().any(|l| l.trim() == id),
            "{} --root {} list does not show {id}:\n{list}",
            ctx.runtime.display(),
            state_root.display()
        );

        // exec
        let out = c
            .ctr(&["task", "exec", "--exec-id", "e1", &id, "echo", "hi"])
            .output();
        assert!(out.success(), "task exec:\n{out}");
        assert_eq!(out.stdout, "hi\n");
        let out = c
            .ctr(&["task", "exec", "--exec-id", "e2", &id, "sh", "-c", "exit 5"])
            .output();
        assert_eq!(out.code, Some(5), "task exec exit code:\n{out}");

        // ps: the init pid, which is in the container's cgroup.
        let ps = c.ctr(&["task", "ps", &id]).ok().stdout;
        let pids: Vec<i32> = ps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(pids.len(), 1, "task ps:\n{ps}");
        let cg = format!("/{}/{id}", c.namespace());
        assert!(
            cgroup_procs("memory", &cg).contains(&pids[0]),
            "pid {} not in {}",
            pids[0],
            cgroup_dir("memory", &cg).display()
        );

        // pause / resume, seen in ctr and in the freezer cgroup.
        c.ctr(&["task", "pause", &id]).ok();
        assert_eq!(task_status(c, &id).as_deref(), Some("PAUSED"));
        let freezer = cgroup_dir("freezer", &cg).join("freezer.state");
        assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
        c.ctr(&["task", "resume", &id]).ok();
        assert_eq!(task_status(c, &id).as_deref(), Some("RUNNING"));
        assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "THAWED");

        // metrics (read by the shim from the cgroup)
        let metrics = c.ctr(&["task", "metrics", &id]).ok().stdout;
        let usage: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("memory.usage_in_bytes"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(usage > 0, "task metrics:\n{metrics}");
        assert!(metrics.contains("pids.current"), "task metrics:\n{metrics}");

        // kill, wait for STOPPED, rm
        c.ctr(&["task", "kill", "-s", "KILL", &id]).ok();
        assert!(
            wait_until(SETTLE, || task_status(c, &id).as_deref() == Some("STOPPED")),
            "task not STOPPED after kill: {:?}",
            task_status(c, &id)
        );
        c.ctr(&["task", "rm", &id]).ok();
        c.ctr(&["container", "rm", &id]).ok();
        assert!(
            !cgroup_dir("memory", &cg).exists(),
            "cgroup {cg} left after task rm"
        );
        let list = Cmd::new(&ctx.runtime)
            .arg("--root")
            .arg(&state_root)
            .args(["list", "-q"])
            .ok();
        assert!(!list.stdout.contains(&id), "runtime state left:\n{list}");
    });
}

#[test]
fn ctr_run_with_a_tty() {
    require_program("script", "bsdutils");
    with_containerd(|c, ctx| {
        let id = unique("kt-ctr-tty");
        let _guard = CtrContainer { c, id: id.clone() };
        let ctr = ctr_run(
            c,
            ctx,
            &["--rm", "-t"],
            &id,
            &["sh", "-c", "tty; echo tty-ok"],
        );
        // script(1) gives ctr a pty of its own to attach the container's to.
        let out = Cmd::new("script")
            .args(["-qec", ctr.cmdline(), "/dev/null"])
            .timeout(Duration::from_secs(60))
            .output();
        assert!(out.success(), "ctr run -t:\n{out}");
        assert!(out.stdout.contains("/dev/pts/0"), "{out}");
        assert!(out.stdout.contains("tty-ok"), "{out}");
    });
}

#[test]
fn ctr_run_privileged_gets_the_hosts_capabilities() {
    // ctr --privileged asks only for the caps the caller has: runc and kapsel both run it.
    with_containerd(|c, ctx| {
        let id = unique("kt-ctr-priv");
        let _guard = CtrContainer { c, id: id.clone() };
        let out = ctr_run(
            c,
            ctx,
            &["--rm", "--privileged"],
            &id,
            &["grep", "CapBnd", "/proc/self/status"],
        )
        .output();
        assert!(out.success(), "ctr run --privileged:\n{out}");
        let inside = parse_cap_hex(out.stdout.trim().trim_start_matches("CapBnd:"));
        let host = parse_cap_hex(&proc_status_field(std::process::id() as i32, "CapBnd").unwrap());
        assert_eq!(inside, host, "{out}");
    });
}
