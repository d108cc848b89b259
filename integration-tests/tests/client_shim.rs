//! containerd 1.6 (`ctr`) driving our shim, `containerd-shim-kapsel-v2`, through the shim v2
//! contract (`ctr run --runtime /abs/path/containerd-shim-kapsel-v2`). The shim runs the
//! `kapsel-runtime` found beside it.
//!
//! The shim under test is `$KAPSEL_SHIM`, else `target/{release,debug}/containerd-shim-kapsel-v2`.
//! One containerd serves every test of this file (a mutex); it is stopped, with its shims and
//! temp dir, when the test process exits.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use kapsel_integration_tests::clients::{Containerd, BUSYBOX_IMAGE};
use kapsel_integration_tests::env::repo_root;
use kapsel_integration_tests::{require_program, unique, wait_until, Cmd, Fixtures};

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
