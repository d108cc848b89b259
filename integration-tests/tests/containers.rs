//! Containers through kapseld, `containerd-shim-kapsel-v2` and kapsel-runtime, driven by the
//! `kapsel` CLI only: run/ps/logs/exec/stop/rm with Docker's exit codes, limits seen in the
//! container's cgroup, restart policies, and kapseld SIGKILLed and started again while
//! containers run (one of them losing its shim meanwhile).
//!
//! kapseld runs under `kapsel-it-reaper --hold` (this machine's PID 1 does not reap): the shims
//! it starts outlive it, as they must, and are reaped there. Binaries: kapseld, kapsel and
//! kapsel-logger from `KAPSEL_MANAGER_BIN_DIR` (else target/release, then target/debug), the
//! shim from `KAPSEL_SHIM` (else target/release, then target/debug), the runtime as the other
//! tests pick it (`KAPSEL_RUNTIME`).

use std::path::Path;
use std::time::{Duration, Instant};

use kapsel_integration_tests::kapseld::{
    bin, load_image_with_volumes, load_layout, read_json, wait_for, Kapseld,
};
use kapsel_integration_tests::Cmd;

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// A file of a process's v1 cgroup of `controller`, trimmed.
fn cgroup_file(pid: i64, controller: &str, name: &str) -> String {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cg
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            (ctrl.split(',').any(|c| c == controller)).then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("a {controller} cgroup for {pid}"));
    let file = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
        .join(name);
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_string()
}

/// The memory cgroup (v1) limit of a process.
fn memory_limit_of(pid: i64) -> u64 {
    cgroup_file(pid, "memory", "memory.limit_in_bytes")
        .parse()
        .unwrap()
}

/// Snapshots of the overlay snapshotter (committed image layers and active container ones).
fn snapshots(k: &Kapseld) -> usize {
    std::fs::read_dir(k.dir.join("root/snapshots/overlayfs/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn run_ps_logs_exec_stop_rm_as_docker_does() {
    let k = Kapseld::start();
    k.load_busybox();

    // Attached runs: output, the container's exit status, Docker's codes for what cannot run.
    let out = k.ok(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(out.stdout, "hello\n", "{out}");
    let out = k
        .kapsel(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .fails();
    assert_eq!(out.exit_code(), 3, "{out}");
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err\n"), "{out}");
    let out = k.kapsel(&["run", "--rm", "busybox", "nosuchcmd"]).fails();
    assert_eq!(out.exit_code(), 127, "{out}");
    assert!(out.stderr.contains("nosuchcmd"), "{out}");
    let out = k.kapsel(&["run", "--rm", "busybox", "/etc/passwd"]).fails();
    assert_eq!(out.exit_code(), 126, "{out}");
    let out = k.kapsel(&["run", "--rm", "nosuchimage", "true"]).fails();
    assert_eq!(out.exit_code(), 125, "{out}");
    assert!(out.stderr.contains("no such image: nosuchimage"), "{out}");
    let out = k.kapsel(&["run", "-m", "lots", "busybox", "true"]).fails();
    assert_eq!(out.exit_code(), 125, "{out}");
    assert!(out.stderr.contains("invalid --memory \"lots\""), "{out}");
    let out = k
        .kapsel(&["run", "-v", "/nonexistent-kctr:/x", "busybox", "true"])
        .fails();
    assert_eq!(out.exit_code(), 125, "{out}");
    assert!(out.stderr.contains("/nonexistent-kctr"), "{out}");
    // --network none (the default): a namespace of its own, with lo up as Docker has it.
    let out = k.ok(&["run", "--rm", "busybox", "ip", "link", "show", "lo"]);
    assert!(out.stdout.contains("<LOOPBACK,UP,LOWER_UP>"), "{out}");
    let out = k.ok(&["run", "--rm", "busybox", "ls", "/sys/class/net"]);
    assert_eq!(out.stdout, "lo\n", "{out}");
    // Nothing of those is left.
    assert_eq!(k.ok(&["ps", "-aq"]).stdout, "");

    // A detached container with a memory limit.
    let snapshots_before = snapshots(&k);
    let id = k
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "-m",
            "64m",
            "busybox",
            "sh",
            "-c",
            "echo started; exec sleep 1000",
        ])
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = k.ok(&["ps"]);
    let lines: Vec<&str> = ps.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    assert!(
        lines[0].starts_with("CONTAINER ID   IMAGE     COMMAND"),
        "{ps}"
    );
    assert!(lines[1].starts_with(&id[..12]), "{ps}");
    assert!(lines[1].contains("Up "), "{ps}");
    assert!(lines[1].ends_with("web"), "{ps}");
    let out = k
        .kapsel(&["run", "-d", "--name", "web", "busybox", "true"])
        .fails();
    assert_eq!(out.exit_code(), 125, "{out}");
    assert!(out.stderr.contains("\"/web\" is already in use"), "{out}");

    let info = k.inspect("web");
    assert_eq!(info["State"]["Status"], "running");
    assert_eq!(info["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(
        info["Kapsel"]["Spec"]["linux"]["resources"]["memory"]["limit"],
        64 << 20
    );
    let pid = info["State"]["Pid"].as_i64().unwrap();
    assert_eq!(memory_limit_of(pid), 64 << 20);

    wait_for("the first log line", Duration::from_secs(10), || {
        k.ok(&["logs", "web"]).stdout == "started\n"
    });
    assert_eq!(k.ok(&["exec", "web", "echo", "hi"]).stdout, "hi\n");
    let out = k.kapsel(&["exec", "web", "sh", "-c", "exit 7"]).fails();
    assert_eq!(out.exit_code(), 7, "{out}");
    let out = k.kapsel(&["exec", "web", "nosuchcmd"]).fails();
    assert_eq!(out.exit_code(), 127, "{out}");
    let top = k.ok(&["top", "web"]);
    assert!(top.stdout.contains("sleep 1000"), "{top}");

    let out = k.kapsel(&["rm", "web"]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(out.stderr.contains("stop the container"), "{out}");
    // sleep as PID 1 ignores SIGTERM: SIGKILL after the timeout.
    let t = Instant::now();
    k.ok(&["stop", "-t", "1", "web"]);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(!alive(pid as i32));
    let ps = k.ok(&["ps", "-a"]);
    assert!(ps.stdout.contains("Exited (137)"), "{ps}");
    let out = k.kapsel(&["exec", "web", "true"]).fails();
    assert!(out.stderr.contains("is not running"), "{out}");
    // Logs outlive the process.
    assert_eq!(k.ok(&["logs", "web"]).stdout, "started\n");
    k.ok(&["rm", "web"]);
    assert_eq!(k.ok(&["ps", "-aq"]).stdout, "");
    // Nothing left: container dir, bundle, the snapshot.
    let root = k.dir.join("root");
    assert!(!root.join("containers").join(&id).exists());
    assert!(!k.dir.join("state/tasks/default").join(&id).exists());
    assert_eq!(snapshots(&k), snapshots_before);
    let out = k.kapsel(&["logs", "web"]).fails();
    assert!(out.stderr.contains("no such container: web"), "{out}");
}

#[test]
fn restart_policies_and_a_sigkilled_kapseld() {
    let mut k = Kapseld::start();
    k.load_busybox();

    // on-failure:2: two restarts, then it stays exited.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    wait_for("two restarts", Duration::from_secs(20), || {
        let i = k.inspect("flaky");
        i["State"]["Status"] == "exited" && i["RestartCount"] == 2
    });
    assert_eq!(k.ok(&["logs", "flaky"]).stdout, "run\nrun\nrun\n");
    let out = k.kapsel(&["wait", "flaky"]).ok();
    assert_eq!(out.stdout, "1\n");

    // Two running containers; kapseld is SIGKILLed; one of them loses its shim meanwhile.
    k.ok(&["run", "-d", "--name", "keep", "busybox", "sleep", "1000"]);
    k.ok(&["run", "-d", "--name", "orphan", "busybox", "sleep", "1000"]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ]);
    let keep_pid = k.inspect("keep")["State"]["Pid"].as_i64().unwrap() as i32;
    let orphan = k.inspect("orphan");
    let orphan_id = orphan["Id"].as_str().unwrap().to_string();
    k.signal(libc::SIGKILL);
    wait_for("kapseld gone", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&k.sock).is_err()
    });
    let shim_pid: i32 = std::fs::read_to_string(
        k.dir
            .join("state/tasks/default")
            .join(&orphan_id)
            .join("shim.pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    // SAFETY: kill(2) on the shim's pid, read from its own pid file.
    unsafe { libc::kill(shim_pid, libc::SIGKILL) };
    wait_for("the orphan's shim gone", Duration::from_secs(10), || {
        !alive(shim_pid)
    });
    assert!(alive(keep_pid), "containers outlive kapseld");

    k.spawn();
    let ps = k.ok(&["ps"]);
    assert!(
        ps.stdout.contains(" keep\n") || ps.stdout.ends_with(" keep\n"),
        "{ps}"
    );
    assert!(ps.stdout.contains("always"), "{ps}");
    assert!(!ps.stdout.contains("orphan"), "{ps}");
    assert_eq!(
        k.ok(&["exec", "keep", "echo", "still here"]).stdout,
        "still here\n"
    );
    let o = k.inspect("orphan");
    assert_eq!(o["State"]["Status"], "exited", "{o}");
    assert_eq!(o["State"]["ExitCode"], 137, "{o}");
    assert!(
        o["State"]["Error"].as_str().unwrap().contains("shim"),
        "{o}"
    );
    // The daemon still watches the reconnected one: its exit is seen.
    k.ok(&["kill", "keep"]);
    wait_for("keep exited", Duration::from_secs(10), || {
        k.inspect("keep")["State"]["Status"] == "exited"
    });
    assert!(!alive(keep_pid));
    k.ok(&["rm", "-f", "keep", "orphan", "always", "flaky"]);
    assert_eq!(k.ok(&["ps", "-aq"]).stdout, "");
    assert!(!k.log().contains("panicked"));
}

/// The `Threads:` line of /proc/PID/status.
fn threads_of(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The pid of a container's shim, from the pid file in its bundle.
fn shim_pid_of(k: &Kapseld, c: &str) -> i32 {
    let id = k.inspect(c)["Id"].as_str().unwrap().to_string();
    std::fs::read_to_string(k.dir.join("state/tasks/default").join(id).join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_exit_while_kapseld_is_down_shows_in_the_first_ps_after_its_restart() {
    let mut k = Kapseld::start();
    k.load_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "quitter",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 7",
    ]);
    k.ok(&["run", "-d", "--name", "stayer", "busybox", "sleep", "1000"]);
    let pid = k.inspect("quitter")["State"]["Pid"].as_i64().unwrap() as i32;
    k.signal(libc::SIGKILL);
    wait_for("kapseld gone", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&k.sock).is_err()
    });
    wait_for("the container's exit", Duration::from_secs(20), || {
        !alive(pid)
    });
    // Past the shim's retries of its exit event: nobody heard it.
    std::thread::sleep(Duration::from_secs(2));

    k.spawn();
    // The very first answers are exact: no "running" until the shim says otherwise.
    let ps = k.ok(&["ps", "-a", "--format", "json"]);
    let row: serde_json::Value = ps
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["Names"] == "quitter")
        .unwrap_or_else(|| panic!("{ps}"));
    assert_eq!(row["State"], "exited", "{ps}");
    assert!(
        row["Status"].as_str().unwrap().starts_with("Exited (7)"),
        "{ps}"
    );
    let i = k.inspect("quitter");
    assert_eq!(i["State"]["Status"], "exited", "{i}");
    assert_eq!(i["State"]["Running"], false, "{i}");
    assert_eq!(i["State"]["ExitCode"], 7, "{i}");
    assert_eq!(i["State"]["Pid"], 0, "{i}");
    assert_eq!(k.kapsel(&["wait", "quitter"]).ok().stdout, "7\n");
    assert_eq!(k.inspect("stayer")["State"]["Status"], "running");
    // Its shim was told to go: nothing of the task is left.
    let id = i["Id"].as_str().unwrap();
    wait_for("the quitter's bundle gone", Duration::from_secs(10), || {
        !k.dir
            .join("state/tasks/default")
            .join(id)
            .join("rootfs/bin")
            .exists()
    });
    k.ok(&["rm", "-f", "quitter", "stayer"]);
    assert!(!k.log().contains("panicked"));
}

#[test]
fn a_shim_sigkilled_while_kapseld_runs_is_noticed_within_seconds() {
    let k = Kapseld::start();
    k.load_busybox();
    k.ok(&["run", "-d", "--name", "victim", "busybox", "sleep", "1000"]);
    let pid = k.inspect("victim")["State"]["Pid"].as_i64().unwrap() as i32;
    let shim = shim_pid_of(&k, "victim");
    let killed = Instant::now();
    // SAFETY: kill(2) on the shim's pid, read from its own pid file.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    wait_for(
        "the container marked exited",
        Duration::from_secs(5),
        || k.inspect("victim")["State"]["Status"] == "exited",
    );
    eprintln!("noticed {:?} after the SIGKILL", killed.elapsed());
    let i = k.inspect("victim");
    assert_eq!(i["State"]["ExitCode"], 137, "{i}");
    let error = i["State"]["Error"].as_str().unwrap();
    assert!(error.contains(&format!("the shim (pid {shim})")), "{i}");
    assert!(error.contains("died"), "{i}");
    // The container's process did not outlive its shim's cleanup.
    wait_for(
        "the container's process gone",
        Duration::from_secs(10),
        || !alive(pid),
    );
    assert_eq!(k.kapsel(&["wait", "victim"]).ok().stdout, "137\n");
    // It starts again with a new shim.
    k.ok(&["start", "victim"]);
    assert_eq!(k.ok(&["exec", "victim", "echo", "back"]).stdout, "back\n");
    k.ok(&["rm", "-f", "victim"]);
    assert!(!k.log().contains("panicked"));
}

/// The shim's exit event cannot reach kapseld (its socket's name is away: the shim's retries
/// fail and it drops the event, while kapseld keeps serving on the open socket): the init's end,
/// seen by kapseld's process watcher, makes it ask the shim, and the container still exits with
/// its code.
#[test]
fn a_lost_exit_event_is_made_up_for_by_the_shims_state() {
    let k = Kapseld::start();
    k.load_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "silent",
        "busybox",
        "sh",
        "-c",
        "sleep 2; exit 3",
    ]);
    let pid = k.inspect("silent")["State"]["Pid"].as_i64().unwrap() as i32;
    let away = k.dir.join("kapseld.sock.away");
    std::fs::rename(&k.sock, &away).unwrap();
    let exited = Instant::now();
    wait_for("the container's exit", Duration::from_secs(20), || {
        !alive(pid)
    });
    // The shim tries for 1.5 s, then gives up on the event.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::rename(&away, &k.sock).unwrap();
    wait_for("the container seen exited", Duration::from_secs(10), || {
        k.inspect("silent")["State"]["Status"] == "exited"
    });
    eprintln!("exit seen {:?} after it happened", exited.elapsed());
    let i = k.inspect("silent");
    assert_eq!(i["State"]["ExitCode"], 3, "{i}");
    assert_eq!(i["State"]["Error"], "", "{i}");
    assert_eq!(k.kapsel(&["wait", "silent"]).ok().stdout, "3\n");
    let shim_log = k.log();
    assert!(
        shim_log.contains("no exit event from the shim"),
        "kapseld's log does not show the fallback:\n{shim_log}"
    );
    k.ok(&["rm", "silent"]);
    assert!(!k.log().contains("panicked"));
}

/// No thread per running container: kapseld learns of exits from its shims' events and of their
/// deaths from one watcher thread, and connects to a shim only for a call.
#[test]
fn kapseld_threads_do_not_grow_with_running_containers() {
    let k = Kapseld::start();
    k.load_busybox();
    let settled = |what: &str| -> usize {
        // Short-lived threads (a CLI connection's, an exit's) come and go: the lowest count
        // seen over a few seconds is what stays.
        let mut low = usize::MAX;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            low = low.min(threads_of(k.pid()));
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("kapseld threads with {what}: {low}");
        low
    };
    k.ok(&["run", "-d", "--name", "t0", "busybox", "sleep", "1000"]);
    let one = settled("1 running");
    for i in 1..20 {
        k.ok(&[
            "run",
            "-d",
            "--name",
            &format!("t{i}"),
            "busybox",
            "sleep",
            "1000",
        ]);
    }
    assert_eq!(k.ok(&["ps", "-q"]).stdout.lines().count(), 20);
    let twenty = settled("20 running");
    assert!(
        twenty <= one + 2,
        "kapseld has {twenty} threads with 20 running containers, {one} with 1"
    );
    // And their exits are still seen, each.
    let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let mut args = vec!["kill"];
    args.extend(names.iter().map(String::as_str));
    k.ok(&args);
    wait_for("20 exits", Duration::from_secs(20), || {
        k.ok(&["ps", "-q"]).stdout.is_empty()
    });
    let mut rm = vec!["rm"];
    rm.extend(names.iter().map(String::as_str));
    k.ok(&rm);
    assert!(!k.log().contains("panicked"));
}

#[test]
fn interactive_sessions_through_a_pty() {
    kapsel_integration_tests::require_program("script", "bsdutils");
    let k = Kapseld::start();
    k.load_busybox();
    let kapsel = format!("{} --address {}", bin("kapsel").display(), k.sock.display());
    // `script` gives the client a pty; the input comes slowly, as a person types.
    let session = |input: &str, cmd: &str| {
        Cmd::new("sh")
            .arg("-c")
            .arg(format!(
                "({input}) | script -qfec \"stty cols 100 rows 30; {kapsel} {cmd}\" /dev/null"
            ))
            .timeout(Duration::from_secs(60))
            .output()
    };
    let out = session(
        "sleep 1; printf 'stty size; echo in-$((40+2))\\r'; sleep 1; printf 'exit 5\\r'; sleep 1",
        "run -it --rm busybox sh",
    );
    assert_eq!(out.exit_code(), 5, "{out}");
    assert!(
        out.stdout.contains("30 100"),
        "the window size reaches the pty: {out}"
    );
    assert!(out.stdout.contains("in-42"), "{out}");

    // Ctrl-P Ctrl-Q detaches; the container keeps running; exec -it gets a tty in it.
    let out = session(
        "sleep 1; printf 'echo before\\r'; sleep 0.5; printf '\\020\\021'; sleep 1",
        "run -it --name it1 busybox sh",
    );
    assert_eq!(out.exit_code(), 0, "{out}");
    assert!(out.stdout.contains("before"), "{out}");
    assert_eq!(k.inspect("it1")["State"]["Status"], "running");
    let out = session(
        "sleep 1; printf 'tty; exit 3\\r'; sleep 1",
        "exec -it it1 sh",
    );
    assert_eq!(out.exit_code(), 3, "{out}");
    assert!(out.stdout.contains("/dev/pts/"), "{out}");

    // -i without -t: the client's EOF closes the container's stdin.
    let out = k
        .kapsel(&["run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo done"])
        .stdin("line\n")
        .ok();
    assert_eq!(out.stdout, "line\ndone\n", "{out}");
    k.ok(&["rm", "-f", "it1"]);
}

#[test]
fn attach_and_start_attach() {
    let k = Kapseld::start();
    k.load_busybox();
    // The container answers the moment its input arrives: the answer must not be lost
    // between attaching and reading the output.
    for i in 0..3 {
        let name = format!("at{i}");
        k.ok(&[
            "run",
            "-d",
            "-i",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "read x; echo got-$x; echo err-$x >&2; exit 6",
        ]);
        let out = k.kapsel(&["attach", &name]).stdin("hi\n").output();
        assert_eq!(
            out.exit_code(),
            6,
            "attach gives the container's status: {out}"
        );
        assert_eq!(out.stdout, "got-hi\n", "{out}");
        assert!(out.stderr.contains("err-hi"), "{out}");
    }
    let out = k.kapsel(&["attach", "at0"]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(out.stderr.contains("is not running"), "{out}");
    let out = k.kapsel(&["attach", "nosuch-at"]).fails();
    assert!(out.stderr.contains("no such container: nosuch-at"), "{out}");

    k.ok(&[
        "create",
        "-i",
        "--name",
        "at-start",
        "busybox",
        "sh",
        "-c",
        "read x; echo started-$x; exit 4",
    ]);
    let out = k
        .kapsel(&["start", "-a", "-i", "at-start"])
        .stdin("now\n")
        .output();
    assert_eq!(out.exit_code(), 4, "{out}");
    assert_eq!(out.stdout, "started-now\n", "{out}");
}

#[test]
fn logs_follow_and_ps_filters() {
    let k = Kapseld::start();
    k.load_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "lf",
        "--label",
        "team=logs",
        "busybox",
        "sh",
        "-c",
        "echo one; sleep 2; echo two; echo err >&2; sleep 1; echo three",
    ]);
    wait_for("the first line", Duration::from_secs(20), || {
        k.ok(&["logs", "lf"]).stdout.starts_with("one\n")
    });
    assert_eq!(
        k.inspect("lf")["State"]["Status"],
        "running",
        "logs -f must start while the container still writes"
    );
    // Started while the container runs: what comes later arrives, and -f ends with the
    // container.
    let out = k.ok(&["logs", "-f", "lf"]);
    assert_eq!(out.stdout, "one\ntwo\nthree\n", "{out}");
    assert_eq!(out.stderr, "err\n", "{out}");
    assert_eq!(k.inspect("lf")["State"]["Status"], "exited");

    k.ok(&["create", "--name", "lf-other", "busybox", "true"]);
    let ids = |filters: &[&str]| {
        let mut args = vec!["ps", "-aq", "--no-trunc"];
        for f in filters {
            args.extend(["-f", f]);
        }
        k.ok(&args).stdout
    };
    let lf = k.inspect("lf")["Id"].as_str().unwrap().to_string();
    let other = k.inspect("lf-other")["Id"].as_str().unwrap().to_string();
    assert_eq!(ids(&["name=lf-other"]), format!("{other}\n"));
    assert_eq!(ids(&["label=team=logs"]), format!("{lf}\n"));
    assert_eq!(ids(&["status=exited"]), format!("{lf}\n"));
    assert_eq!(ids(&["status=created"]), format!("{other}\n"));
    assert_eq!(ids(&["exited=0", "name=lf"]), format!("{lf}\n"));
    assert_eq!(ids(&["exited=1"]), "");
    let out = k.kapsel(&["ps", "-a", "-f", "nmae=lf"]).fails();
    assert!(out.stderr.contains("invalid filter \"nmae=lf\""), "{out}");
    k.ok(&["rm", "lf", "lf-other"]);
}

#[test]
fn run_flags_reach_the_container() {
    let k = Kapseld::start();
    k.load_busybox();
    let env_file = k.dir.join("env.list");
    std::fs::write(&env_file, "# a comment\nFROM_FILE=1\nB=from-file\n").unwrap();
    let script = "echo env=$FROM_FILE:$B; echo pwd=$(pwd); echo groups=$(id -G); \
         echo host=$(hostname); touch /x 2>/dev/null && echo root=rw || echo root=ro; \
         touch /work/y && echo work=rw; echo capeff=$(grep CapEff /proc/self/status | cut -f2); \
         echo nofile=$(ulimit -n):$(ulimit -Hn); echo pid1=$(cat /proc/1/comm); \
         echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2); cd /sys/fs/cgroup; \
         echo mem=$(cat memory/memory.limit_in_bytes); \
         echo memsw=$(cat memory/memory.memsw.limit_in_bytes); \
         echo shares=$(cat cpu/cpu.shares); echo quota=$(cat cpu/cpu.cfs_quota_us); \
         echo cpuset=$(cat cpuset/cpuset.cpus); echo pids=$(cat pids/pids.max)";
    let out = k.ok(&[
        "run",
        "--name",
        "flags",
        "--env-file",
        &env_file.display().to_string(),
        "-e",
        "B=from-flag",
        "--entrypoint",
        "/bin/sh",
        "-w",
        "/work",
        "--group-add",
        "4321",
        "--hostname",
        "flaghost",
        "--label",
        "team=kapsel",
        "--read-only",
        "--tmpfs",
        "/work:mode=1777",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "net_bind_service",
        "--ulimit",
        "nofile=100:200",
        "--init",
        "--security-opt",
        "no-new-privileges",
        "-c",
        "512",
        "--cpus",
        "0.5",
        "--cpuset-cpus",
        "0",
        "-m",
        "32m",
        "--memory-swap",
        "64m",
        "--pids-limit",
        "30",
        "--stop-signal",
        "SIGUSR1",
        "busybox",
        "-c",
        script,
    ]);
    let out = out.stdout;
    let field = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
            .to_string()
    };
    assert_eq!(field("env"), "1:from-flag", "-e wins over --env-file");
    assert_eq!(field("pwd"), "/work");
    assert_eq!(field("groups"), "0 4321");
    assert_eq!(field("host"), "flaghost");
    assert_eq!(field("root"), "ro");
    assert_eq!(field("work"), "rw");
    assert_eq!(
        field("capeff"),
        "0000000000000400",
        "only CAP_NET_BIND_SERVICE"
    );
    assert_eq!(field("nofile"), "100:200");
    assert_eq!(field("pid1"), "kapsel-init");
    assert_eq!(field("nnp"), "1");
    assert_eq!(field("mem"), (32u64 << 20).to_string());
    assert_eq!(field("memsw"), (64u64 << 20).to_string());
    assert_eq!(field("shares"), "512");
    assert_eq!(field("quota"), "50000");
    assert_eq!(field("cpuset"), "0");
    assert_eq!(field("pids"), "30");

    let c = k.inspect("flags");
    assert_eq!(c["Config"]["Labels"]["team"], "kapsel");
    assert_eq!(c["Config"]["Entrypoint"][0], "/bin/sh");
    assert_eq!(c["HostConfig"]["GroupAdd"][0], "4321");
    assert_eq!(c["HostConfig"]["Memory"], 32 << 20);
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(c["HostConfig"]["Init"], true);
    assert_eq!(c["State"]["ExitCode"], 0);
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["-c", script]));
    k.ok(&["rm", "flags"]);

    // Without flags, inspect shows what the container runs: the image's Cmd.
    k.ok(&["create", "--name", "plain", "busybox"]);
    let c = k.inspect("plain");
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(c["Config"]["Entrypoint"], serde_json::Value::Null);
    k.ok(&["rm", "plain"]);
}

#[test]
fn fifty_containers_at_once_leave_nothing_behind() {
    let k = Kapseld::start();
    k.load_busybox();
    let before = snapshots(&k);
    let ids: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..50)
            .map(|i| {
                let k = &k;
                s.spawn(move || {
                    let name = format!("many{i}");
                    k.ok(&["run", "-d", "--name", &name, "busybox", "sleep", "1000"])
                        .stdout
                        .trim()
                        .to_string()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let ps = k.ok(&["ps", "-q"]);
    assert_eq!(ps.stdout.lines().count(), 50, "{ps}");
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    k.ok(&args);
    assert_eq!(k.ok(&["ps", "-aq"]).stdout, "");
    assert_eq!(snapshots(&k), before);
    let listing = |p: &str| {
        std::fs::read_dir(k.dir.join(p))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(listing("root/containers"), 0);
    assert_eq!(listing("state/tasks/default"), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&k.dir.display().to_string()),
        "mounts left under {}",
        k.dir.display()
    );
    for id in &ids {
        assert!(
            !Path::new("/sys/fs/cgroup/pids/kapsel").join(id).exists(),
            "cgroup of {id} left"
        );
    }
    // No shim of this daemon is left (they were told to exit when their task went).
    wait_for("the shims to exit", Duration::from_secs(10), || {
        let sock = k.sock.display().to_string();
        !std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c).replace('\0', " ");
                        // The shim itself, not kapseld (whose --shim names it).
                        let program = c.split(' ').next().unwrap_or("");
                        program.ends_with("containerd-shim-kapsel-v2") && c.contains(&sock)
                    })
                    .unwrap_or(false)
                    && alive(e.file_name().to_string_lossy().parse().unwrap_or(0))
            })
    });
}

/// Memory and memory+swap through `run` and `update` by Docker's rules (memory above the
/// memory+swap in force refused unless --memory-swap comes too), and State.OOMKilled set for a
/// container the kernel OOM-killed, not for one killed with SIGKILL otherwise. The same on
/// cgroup v2 is checked in the qemu guest (scripts/cgroup2-vm-kapseld.sh).
#[test]
fn memory_swap_updates_and_oom_kills_as_docker_reports_them() {
    const M: u64 = 1 << 20;
    let k = Kapseld::start();
    k.load_busybox();
    let memsw = |pid| -> u64 {
        cgroup_file(pid, "memory", "memory.memsw.limit_in_bytes")
            .parse()
            .unwrap()
    };
    let swap_accounting = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "kgm",
        "-m",
        "32m",
        "--memory-swap",
        "48m",
        "busybox",
        "sleep",
        "1000",
    ]);
    let pid = pid_of(&k, "kgm");
    assert_eq!(memory_limit_of(pid), 32 * M);
    if swap_accounting {
        assert_eq!(memsw(pid), 48 * M);
    }
    // Docker: "Memory limit should be smaller than already set memoryswap limit".
    let out = k.kapsel(&["update", "-m", "64m", "kgm"]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr.contains("--memory-swap") && out.stderr.contains(&(48 * M).to_string()),
        "{out}"
    );
    assert_eq!(memory_limit_of(pid), 32 * M, "nothing changed");
    assert_eq!(k.inspect("kgm")["HostConfig"]["Memory"], 32 * M);
    k.ok(&["update", "-m", "64m", "--memory-swap", "96m", "kgm"]);
    assert_eq!(memory_limit_of(pid), 64 * M);
    if swap_accounting {
        assert_eq!(memsw(pid), 96 * M);
    }
    let info = k.inspect("kgm");
    assert_eq!(info["HostConfig"]["Memory"], 64 * M, "{info}");
    assert_eq!(info["HostConfig"]["MemorySwap"], 96 * M, "{info}");
    // Lower again, memory alone: fits under the 96m, which stays.
    k.ok(&["update", "-m", "40m", "kgm"]);
    assert_eq!(memory_limit_of(pid), 40 * M);
    if swap_accounting {
        assert_eq!(memsw(pid), 96 * M);
    }

    // A SIGKILL is no OOM kill.
    k.ok(&["kill", "kgm"]);
    wait_for("kgm to exit", Duration::from_secs(20), || {
        k.inspect("kgm")["State"]["Status"] == "exited"
    });
    let st = &k.inspect("kgm")["State"];
    assert_eq!(st["ExitCode"], 137, "{st}");
    assert_eq!(st["OOMKilled"], false, "{st}");

    // awk doubles a string until the 16 MiB limit (swap counted with it) gets it killed.
    let out = k
        .kapsel(&[
            "run",
            "--name",
            "kgoom",
            "-m",
            "16m",
            "--memory-swap",
            "16m",
            "busybox",
            "awk",
            "BEGIN { s = \"0123456789abcdef\"; for (;;) s = s s }",
        ])
        .output();
    assert_eq!(out.exit_code(), 137, "{out}");
    let st = &k.inspect("kgoom")["State"];
    assert_eq!(st["ExitCode"], 137, "{st}");
    assert_eq!(st["OOMKilled"], true, "{st}");
    assert_eq!(st["Status"], "exited", "{st}");
    k.ok(&["rm", "-f", "kgm", "kgoom"]);
}

/// The container's main pid, as `inspect` shows it.
fn pid_of(k: &Kapseld, c: &str) -> i64 {
    k.inspect(c)["State"]["Pid"].as_i64().unwrap()
}

/// A one-file image loaded from an OCI archive whose index names nothing: a dangling image.
fn load_dangling_image(k: &Kapseld) {
    use kapsel_integration_tests::kapseld::{tar_layer, write_image};
    let layout = k.dir.join("dangling-layout");
    let tree = k.dir.join("dangling-tree");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("kgaps-dangling"), "x").unwrap();
    let layer = tar_layer(&layout, &tree, false);
    write_image(&layout, &[layer], "kgaps-dangling:v1");
    // No name: drop the index's annotations.
    let index = layout.join("index.json");
    let mut v = read_json(&index);
    v["manifests"][0]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    std::fs::write(&index, serde_json::to_vec(&v).unwrap()).unwrap();
    load_layout(k, &layout);
}

#[test]
fn stats_update_pause_rename_logs_exec_kill_and_prune() {
    let k = Kapseld::start();
    k.load_busybox();
    let id = k
        .ok(&[
            "run",
            "-d",
            "--name",
            "kg1",
            "-m",
            "32m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line$i; done; exec sleep 1000",
        ])
        .stdout
        .trim()
        .to_string();
    let pid = pid_of(&k, "kg1");

    // stats: the container's cgroup figures, as a table and as JSON.
    let out = k.ok(&["stats", "--no-stream", "kg1"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("CONTAINER ID   NAME"), "{out}");
    assert!(lines[1].starts_with(&id[..12]), "{out}");
    assert!(lines[1].contains(" kg1 "), "{out}");
    assert!(lines[1].contains("/ 32MiB"), "{out}");
    assert!(lines[1].ends_with(" 1"), "one process: {out}");
    let out = k.ok(&["stats", "--no-stream", "--format", "json", "kg1"]);
    // Docker's keys; the figures behind them come from the shim's cgroup stats.
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["Name"], "kg1", "{v}");
    assert_eq!(v["Container"], "kg1", "{v}");
    assert_eq!(v["ID"], &id[..12], "{v}");
    assert_eq!(v["PIDs"], "1", "{v}");
    let mem = v["MemUsage"].as_str().unwrap();
    let (used, limit) = mem.split_once(" / ").unwrap();
    assert_eq!(limit, "32MiB", "{v}");
    // Some memory in use, well under the limit.
    assert!(used.ends_with("KiB") || used.ends_with("MiB"), "{v}");
    assert!(!used.starts_with('0'), "{v}");
    assert!(v["CPUPerc"].as_str().unwrap().ends_with('%'), "{v}");
    assert!(v["MemPerc"].as_str().unwrap().ends_with('%'), "{v}");
    // update: new limits in the container's v1 cgroup and in inspect.
    assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "50000");
    k.ok(&[
        "update",
        "-m",
        "64m",
        "--cpus",
        "1.5",
        "--pids-limit",
        "80",
        "kg1",
    ]);
    assert_eq!(memory_limit_of(pid), 64 << 20);
    assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "150000");
    assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "80");
    let info = k.inspect("kg1");
    assert_eq!(info["HostConfig"]["Memory"], 64 << 20, "{info}");
    assert_eq!(info["HostConfig"]["PidsLimit"], 80, "{info}");
    let out = k.kapsel(&["update", "--cpus", "lots", "kg1"]).fails();
    assert!(out.stderr.contains("--cpus"), "{out}");

    // pause / unpause: the freezer cgroup, ps, and exec refused while paused.
    k.ok(&["pause", "kg1"]);
    assert_eq!(cgroup_file(pid, "freezer", "freezer.state"), "FROZEN");
    let ps = k.ok(&["ps"]);
    assert!(ps.stdout.contains("(Paused)"), "{ps}");
    assert_eq!(k.inspect("kg1")["State"]["Status"], "paused");
    let out = k.kapsel(&["exec", "kg1", "true"]).fails();
    assert!(out.stderr.contains("paused"), "{out}");
    k.ok(&["unpause", "kg1"]);
    assert_eq!(cgroup_file(pid, "freezer", "freezer.state"), "THAWED");
    let ps = k.ok(&["ps"]);
    assert!(!ps.stdout.contains("Paused"), "{ps}");
    assert_eq!(k.inspect("kg1")["State"]["Status"], "running");

    // top.
    let top = k.ok(&["top", "kg1"]);
    assert!(top.stdout.lines().next().unwrap().contains("PID"), "{top}");
    assert!(top.stdout.contains("sleep 1000"), "{top}");
    assert!(top.stdout.contains(&pid.to_string()), "{top}");

    // rename: the new name works, the old is gone, a name in use is refused.
    k.ok(&["rename", "kg1", "kg2"]);
    assert_eq!(k.inspect("kg2")["Id"], id.as_str());
    assert_eq!(k.inspect("kg2")["Name"], "/kg2");
    let out = k.kapsel(&["top", "kg1"]).fails();
    assert!(out.stderr.contains("no such container: kg1"), "{out}");
    k.ok(&["create", "--name", "kg3", "busybox", "true"]);
    let out = k.kapsel(&["rename", "kg3", "kg2"]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(out.stderr.contains("\"/kg2\" is already in use"), "{out}");
    assert!(k.ok(&["ps", "-a"]).stdout.contains(" kg3\n"));

    // logs --tail, -t, --since.
    wait_for("five log lines", Duration::from_secs(10), || {
        k.ok(&["logs", "kg2"]).stdout.lines().count() == 5
    });
    assert_eq!(
        k.ok(&["logs", "--tail", "2", "kg2"]).stdout,
        "line4\nline5\n"
    );
    assert_eq!(k.ok(&["logs", "--tail", "0", "kg2"]).stdout, "");
    let out = k.ok(&["logs", "-t", "--tail", "1", "kg2"]);
    let (ts, line) = out.stdout.trim_end().split_once(' ').unwrap();
    assert_eq!(line, "line5", "{out}");
    assert!(
        ts.starts_with("20") && ts.ends_with('Z') && ts.contains('T'),
        "{out}"
    );
    assert_eq!(
        k.ok(&["logs", "--since", "10m", "kg2"])
            .stdout
            .lines()
            .count(),
        5
    );
    std::thread::sleep(Duration::from_millis(1100));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    assert_eq!(k.ok(&["logs", "--since", &now, "kg2"]).stdout, "");
    let out = k.kapsel(&["logs", "--tail", "some", "kg2"]).fails();
    assert!(out.stderr.contains("--tail"), "{out}");

    // exec -e / -u / -w.
    let out = k.ok(&[
        "exec",
        "-e",
        "KG=gaps",
        "-u",
        "1000:1001",
        "-w",
        "/tmp",
        "kg2",
        "sh",
        "-c",
        "echo $KG $(id -u):$(id -g) $(pwd)",
    ]);
    assert_eq!(out.stdout, "gaps 1000:1001 /tmp\n", "{out}");
    let out = k.ok(&["exec", "-u", "nobody", "kg2", "id", "-un"]);
    assert_eq!(out.stdout, "nobody\n", "{out}");
    let out = k
        .kapsel(&["exec", "-u", "nosuchuser", "kg2", "true"])
        .fails();
    assert!(out.stderr.contains("nosuchuser"), "{out}");

    // restart: a new process, the old one gone, the output again.
    k.ok(&["restart", "-t", "1", "kg2"]);
    let pid2 = pid_of(&k, "kg2");
    assert_ne!(pid2, pid);
    assert!(!alive(pid as i32));
    assert_eq!(k.inspect("kg2")["State"]["Status"], "running");
    wait_for("the output twice", Duration::from_secs(10), || {
        k.ok(&["logs", "kg2"]).stdout.lines().count() == 10
    });

    // kill -s: the container's trap sees the signal; wait prints its exit code.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "kgk",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 9' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    wait_for("the trap set", Duration::from_secs(10), || {
        k.ok(&["logs", "kgk"]).stdout == "ready\n"
    });
    k.ok(&["kill", "-s", "USR1", "kgk"]);
    assert_eq!(k.ok(&["wait", "kgk"]).stdout, "9\n");
    assert_eq!(k.ok(&["logs", "kgk"]).stdout, "ready\ngot-usr1\n");
    let out = k.kapsel(&["kill", "-s", "NOSUCHSIG", "kg2"]).fails();
    assert!(out.stderr.contains("NOSUCHSIG"), "{out}");
    let out = k.kapsel(&["exec", "kgk", "true"]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(out.stderr.contains("is not running"), "{out}");
    let out = k.kapsel(&["wait", "nosuch"]).fails();
    assert!(out.stderr.contains("no such container: nosuch"), "{out}");

    // --log-opt: json-file rotation at 1 KiB, three files kept; logs reads across them.
    // (Detached: an attached client reads its output through the log files, and rotation
    // this small outruns it.)
    k.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "--name",
        "kglog",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done",
    ]);
    assert_eq!(k.ok(&["wait", "kglog"]).stdout, "0\n");
    let lc = k.inspect("kglog")["HostConfig"]["LogConfig"].clone();
    assert_eq!(
        lc,
        serde_json::json!({"Type": "json-file", "Config": {"max-size": "1k", "max-file": "3"}})
    );
    let id = k.inspect("kglog")["Id"].as_str().unwrap().to_string();
    let dir = k.dir.join("root/containers").join(&id);
    let log = format!("{id}-json.log");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&log) && !n.ends_with(".lock"))
        .collect();
    files.sort();
    assert_eq!(files, [log.clone(), format!("{log}.1"), format!("{log}.2")]);
    for f in &files {
        let size = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(size > 0 && size <= 1024, "{f}: {size} bytes");
    }
    let out = k.ok(&["logs", "kglog"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() > 10 && lines.len() < 60, "{out}");
    let first: usize = lines[0].split('-').nth(1).unwrap().parse().unwrap();
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("line-{}-", first + i)), "{out}");
    }
    assert!(lines.last().unwrap().starts_with("line-199-"), "{out}");

    // Bad input leaves nothing behind.
    let before = k.ok(&["ps", "-aq", "--no-trunc"]).stdout;
    let containers_before = std::fs::read_dir(k.dir.join("root/containers"))
        .unwrap()
        .count();
    for (args, needle) in [
        (vec!["--cpus", "lots"], "--cpus"),
        (vec!["--cpus", "0"], "--cpus"),
        (vec!["--memory=-5m"], "--memory"),
        (vec!["-m", "1k"], "minimum memory limit is 6 MiB"),
        (vec!["--cpus", "64"], "the number of CPUs of this host"),
        (vec!["--nosuchflag"], "--nosuchflag"),
        (vec!["--log-opt", "max-size=lots"], "--log-opt"),
        (vec!["--log-opt", "compress=true"], "unknown log opt"),
        (
            vec!["-v", "/nonexistent-kgaps/x:/x"],
            "/nonexistent-kgaps/x",
        ),
    ] {
        let mut a = vec!["run", "--name", "kgbad"];
        a.extend(args);
        a.extend(["busybox", "true"]);
        let out = k.kapsel(&a).fails();
        assert_eq!(out.exit_code(), 125, "{out}");
        assert!(out.stderr.contains(needle), "{out}");
        assert_eq!(k.ok(&["ps", "-aq", "--no-trunc"]).stdout, before);
        assert_eq!(
            std::fs::read_dir(k.dir.join("root/containers"))
                .unwrap()
                .count(),
            containers_before
        );
    }

    // container prune: the stopped ones (kg3 created, kgk exited) go, the running one stays.
    let kgk = k.inspect("kgk")["Id"].as_str().unwrap().to_string();
    let out = k.ok(&["container", "prune", "-f"]);
    assert!(out.stdout.starts_with("Deleted Containers:\n"), "{out}");
    assert!(out.stdout.contains(&kgk), "{out}");
    let ps = k.ok(&["ps", "-a", "--format", "json"]);
    assert_eq!(ps.stdout.lines().count(), 1, "{ps}");
    assert!(ps.stdout.contains("\"kg2\""), "{ps}");

    // system prune: stopped containers and dangling images; busybox (named) stays.
    load_dangling_image(&k);
    let images = k.ok(&["images"]);
    assert!(images.stdout.contains("<none>"), "{images}");
    k.ok(&["run", "--name", "kgdone", "busybox", "true"]);
    let out = k.ok(&["system", "prune", "-f"]);
    assert!(out.stdout.contains("Deleted Containers:"), "{out}");
    assert!(out.stdout.contains("Deleted Images:"), "{out}");
    let images = k.ok(&["images"]);
    assert!(!images.stdout.contains("<none>"), "{images}");
    assert!(images.stdout.contains("busybox"), "{images}");
    let ps = k.ok(&["ps", "-a"]);
    assert!(!ps.stdout.contains("kgdone"), "{ps}");
    assert!(ps.stdout.contains("kg2"), "{ps}");
    assert_eq!(k.inspect("kg2")["State"]["Status"], "running");
    k.ok(&["rm", "-f", "kg2"]);
    assert!(!k.log().contains("panicked"));
}

#[test]
fn restart_policies_across_a_kapseld_restart_and_events() {
    let mut k = Kapseld::start();
    k.load_busybox();

    // Events: a container's create, start, exit and delete, and its task's.
    let mut events = std::process::Command::new(bin("kapsel"))
        .arg("--address")
        .arg(&k.sock)
        .args(["events", "--topic", "/containers/", "--topic", "/tasks/"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let id = k
        .ok(&["run", "-d", "--name", "kgev", "busybox", "true"])
        .stdout
        .trim()
        .to_string();
    k.ok(&["wait", "kgev"]);
    k.ok(&["rm", "kgev"]);
    std::thread::sleep(Duration::from_millis(500));
    events.kill().unwrap();
    let out = events.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let topics: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(&id))
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    for t in [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ] {
        assert!(topics.contains(&t), "{t} missing in {topics:?}\n{out}");
    }
    let pos = |t: &str| topics.iter().position(|x| *x == t).unwrap();
    assert!(
        pos("/containers/create") < pos("/tasks/start"),
        "{topics:?}"
    );
    assert!(pos("/tasks/start") < pos("/tasks/exit"), "{topics:?}");
    assert!(pos("/tasks/exit") < pos("/containers/delete"), "{topics:?}");

    // Restart policies across a kapseld restart.
    let sleeper = |name: &str, policy: &str| {
        k.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "1000",
        ]);
    };
    sleeper("kgalways", "always");
    sleeper("kgunless", "unless-stopped");
    sleeper("kgno", "no");
    sleeper("kgalways-stopped", "always");
    sleeper("kgunless-stopped", "unless-stopped");
    k.ok(&["stop", "-t", "1", "kgalways-stopped", "kgunless-stopped"]);
    // A user stop is not restarted while kapseld runs.
    std::thread::sleep(Duration::from_secs(1));
    for c in ["kgalways-stopped", "kgunless-stopped"] {
        assert_eq!(k.inspect(c)["State"]["Status"], "exited", "{c}");
    }
    let pids: Vec<(&str, i64)> = ["kgalways", "kgunless", "kgno"]
        .into_iter()
        .map(|c| (c, pid_of(&k, c)))
        .collect();
    // kapseld goes away; the running containers die meanwhile.
    let daemon = k.pid();
    k.signal(libc::SIGTERM);
    wait_for("kapseld gone", Duration::from_secs(20), || !alive(daemon));
    for (c, pid) in &pids {
        // SAFETY: kill(2) on the container's main process, read from inspect.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        wait_for(c, Duration::from_secs(10), || !alive(*pid as i32));
    }
    k.spawn();
    // The reconnected shims report the exits; the policies start new processes.
    wait_for(
        "always and unless-stopped running again",
        Duration::from_secs(30),
        || {
            pids[..2].iter().all(|(c, old)| {
                let i = k.inspect(c);
                i["State"]["Status"] == "running" && i["State"]["Pid"].as_i64() != Some(*old)
            }) && k.inspect("kgalways-stopped")["State"]["Status"] == "running"
        },
    );
    let no = k.inspect("kgno");
    assert_eq!(no["State"]["Status"], "exited", "{no}");
    assert_eq!(no["State"]["ExitCode"], 137, "{no}");
    let us = k.inspect("kgunless-stopped");
    assert_eq!(us["State"]["Status"], "exited", "{us}");
    assert_eq!(k.ok(&["exec", "kgunless", "echo", "back"]).stdout, "back\n");
    k.ok(&[
        "rm",
        "-f",
        "kgalways",
        "kgunless",
        "kgno",
        "kgalways-stopped",
        "kgunless-stopped",
    ]);
    assert_eq!(k.ok(&["ps", "-aq"]).stdout, "");
    assert!(!k.log().contains("panicked"));
}

#[test]
fn image_volumes_become_anonymous_volumes_seeded_from_the_image() {
    let k = Kapseld::start();
    load_image_with_volumes(&k);
    k.ok(&[
        "run",
        "-d",
        "--read-only",
        "--name",
        "kgvol",
        "kgaps-vol:1",
        "sleep",
        "1000",
    ]);
    // Seeded from the image, owners kept; writable though the root is read-only.
    let out = k.ok(&[
        "exec",
        "kgvol",
        "sh",
        "-c",
        "cat /data/seed; stat -c %u:%g /data /data/seed",
    ]);
    assert_eq!(out.stdout, "seeded\n1000:1000\n1000:1000\n", "{out}");
    k.ok(&[
        "exec",
        "kgvol",
        "sh",
        "-c",
        "echo w > /data/new; echo s > /scratch/x",
    ]);
    let out = k.kapsel(&["exec", "kgvol", "touch", "/etc/nope"]).fails();
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    // Anonymous volumes under <root>/volumes/<64 hex>/_data.
    let mounts = k.inspect("kgvol")["Mounts"].clone();
    let sources: Vec<std::path::PathBuf> = mounts
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["Type"], "volume", "{mounts}");
            assert_eq!(m["Driver"], "local", "{mounts}");
            let name = m["Name"].as_str().unwrap();
            assert_eq!(name.len(), 64, "{mounts}");
            let src = std::path::PathBuf::from(m["Source"].as_str().unwrap());
            assert_eq!(src, k.dir.join("root/volumes").join(name).join("_data"));
            src
        })
        .collect();
    let dests: Vec<&str> = mounts
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Destination"].as_str().unwrap())
        .collect();
    assert_eq!(dests, ["/data", "/scratch"], "{mounts}");
    assert_eq!(
        std::fs::read_to_string(sources[0].join("new")).unwrap(),
        "w\n"
    );
    assert_eq!(
        std::fs::read_to_string(sources[1].join("x")).unwrap(),
        "s\n"
    );
    // A restart keeps what the volume holds.
    k.ok(&["restart", "-t", "1", "kgvol"]);
    assert_eq!(k.ok(&["exec", "kgvol", "cat", "/data/new"]).stdout, "w\n");
    // A bind mount over a volume path replaces it.
    let host = k.dir.join("kgvol-host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("h"), "host\n").unwrap();
    let bind = format!("{}:/data", host.display());
    let out = k.ok(&["run", "--rm", "-v", &bind, "kgaps-vol:1", "ls", "/data"]);
    assert_eq!(out.stdout, "h\n", "{out}");
    // rm -v takes the anonymous volumes with the container.
    k.ok(&["rm", "-f", "-v", "kgvol"]);
    for s in &sources {
        assert!(!s.exists(), "{}", s.display());
    }
    assert_eq!(k.ok(&["ps", "-aq"]).stdout, "");
}
