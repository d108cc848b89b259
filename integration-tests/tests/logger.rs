//! `kapsel-logger` (manager/src/bin/kapsel-logger.rs) run by our shim, `containerd-shim-kapsel-v2`,
//! through a `binary://` log URI: through containerd 1.6 (`ctr run --log-uri`) for both streams,
//! rotation, bytes that are not UTF-8, 16 KiB partial lines and `wait_writer_done`; through
//! kapseld's shim client (`tasks::Shim`) for a terminal (ctr ignores `--log-uri` with `-t`).
//!
//! Binaries: `$KAPSEL_SHIM` / `$KAPSEL_LOGGER`, else `target/{release,debug}/...`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kapsel_integration_tests::clients::{Containerd, BUSYBOX_IMAGE};
use kapsel_integration_tests::env::repo_root;
use kapsel_integration_tests::{pid_alive, require_program, require_root, unique, wait_until};
use kapsel_integration_tests::{Cmd, Fixtures};
use kapsel_manager::logs::{self, Entry, LogQuery, Stream, WriterOptions};
use kapsel_manager::tasks;

static DAEMON: Mutex<Option<Containerd>> = Mutex::new(None);

extern "C" fn stop_daemon_at_exit() {
    if let Some(mut c) = DAEMON.lock().unwrap_or_else(|e| e.into_inner()).take() {
        c.stop();
    }
}

/// `$var`, else the binary `name` from target/release or target/debug.
fn built(var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(v) = std::env::var_os(var) {
        return PathBuf::from(v);
    }
    ["release", "debug"]
        .iter()
        .map(|p| repo_root().join("target").join(p).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not built: cargo build --release -p {package}"))
}

fn shim() -> String {
    built(
        "KAPSEL_SHIM",
        "containerd-shim-kapsel-v2",
        "containerd-shim-kapsel-v2",
    )
    .display()
    .to_string()
}

fn logger() -> PathBuf {
    built("KAPSEL_LOGGER", "kapsel-logger", "kapsel-manager")
}

fn with_containerd(f: impl FnOnce(&Containerd)) {
    require_program("ctr", "containerd");
    let mut guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        // SAFETY: atexit registers a plain extern "C" function with no arguments.
        assert_eq!(unsafe { libc::atexit(stop_daemon_at_exit) }, 0, "atexit");
        let c = Containerd::start();
        c.import(&Fixtures::get().oci_archive());
        *guard = Some(c);
    }
    f(guard.as_ref().expect("containerd"))
}

/// Removes the container (and its task) however the test ends.
struct Removed<'a>(&'a Containerd, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let (c, id) = (self.0, self.1.as_str());
        let _ = c.ctr(&["task", "kill", "-s", "KILL", id]).output_result();
        let _ = c.ctr(&["task", "rm", "-f", id]).output_result();
        let _ = c.ctr(&["container", "rm", id]).output_result();
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("klogs-it-")
        .tempdir()
        .unwrap()
}

fn entries(log: &Path) -> Vec<Entry> {
    logs::read_all(log).unwrap()
}

fn text(e: &Entry) -> String {
    String::from_utf8_lossy(&e.log).into_owned()
}

/// Every raw line of every file is Docker's json-file form.
fn check_json_lines(file: &Path) {
    let raw = std::fs::read_to_string(file).unwrap();
    assert!(raw.ends_with('\n'), "{file:?} ends in a torn line");
    for line in raw.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{file:?}: not JSON ({e}): {line}"));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        // A fourth field, raw, only for a line with bytes that are not UTF-8.
        assert_eq!(
            keys.len(),
            3 + usize::from(v.get("raw").is_some()),
            "{line}"
        );
        assert!(v["log"].is_string(), "{line}");
        assert!(v["stream"] == "stdout" || v["stream"] == "stderr", "{line}");
        let t = v["time"].as_str().unwrap();
        assert!(
            t.len() == 30
                && t.ends_with('Z')
                && t.as_bytes()[10] == b'T'
                && t.as_bytes()[19] == b'.',
            "time {t:?} is not RFC 3339 with nanoseconds in UTC"
        );
        assert!(line.starts_with("{\"log\":"), "field order: {line}");
    }
}

/// The numbers of entries "`word` N\n" of `stream`.
fn numbered(all: &[Entry], stream: Stream, word: &str) -> Vec<usize> {
    all.iter()
        .filter(|e| e.stream == stream)
        .filter_map(|e| text(e).strip_prefix(word)?.trim().parse().ok())
        .collect()
}

#[test]
fn logger_writes_both_streams_rotates_and_is_done_when_the_container_is() {
    with_containerd(|c| {
        let dir = tempdir();
        let log = dir.path().join("c/c-json.log");
        let opts = WriterOptions {
            max_size: Some(4096),
            max_files: 3,
        };
        let uri = logs::logger_uri(&logger(), &log, opts, false);
        let id = unique("klogs-rot");
        let _rm = Removed(c, id.clone());
        // Paced, so that the two streams interleave in the log as they were written; pauses
        // before the lines whose place the checks below rely on.
        let script = "for i in $(seq 0 299); do echo out $i; echo err $i >&2; usleep 1000; done; \
                      usleep 200000; head -c 20000 /dev/zero | tr '\\000' x; echo; \
                      printf '\\377\\376 bin\\n'; usleep 200000; echo last-err >&2; \
                      usleep 200000; printf no-newline";
        let out = c
            .ctr(&["run", "--runtime", &shim(), "--rm", "--log-uri", &uri])
            .args([BUSYBOX_IMAGE, id.as_str(), "sh", "-c", script])
            .timeout(Duration::from_secs(60))
            .output();
        assert!(out.success(), "{out}\ncontainerd log:\n{}", c.log());
        // The container is gone; its logger writes the last lines and exits.
        let t = Instant::now();
        assert!(
            logs::wait_writer_done(&log, Duration::from_secs(10)),
            "logger still holds {:?}",
            logs::lock_path(&log)
        );
        eprintln!("writer done {:?} after ctr returned", t.elapsed());

        let files = [
            log.clone(),
            logs::rotated_path(&log, 1),
            logs::rotated_path(&log, 2),
        ];
        for f in &files {
            check_json_lines(f);
        }
        assert!(
            !logs::rotated_path(&log, 3).exists(),
            "max-file 3 kept more"
        );
        // .1 is just the first 16 KiB piece of the long line (an entry larger than max-size
        // gets a file of its own); the others keep to max-size.
        for f in [&files[0], &files[2]] {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len <= 4096, "{f:?}: {len} bytes");
        }
        assert_eq!(
            std::fs::read_to_string(&files[1]).unwrap().lines().count(),
            1
        );

        let all = entries(&log);
        let last = all.last().unwrap();
        assert_eq!(last.log, b"no-newline", "{all:?}");
        assert!(last.partial() && last.stream == Stream::Stdout);
        let tail: Vec<(Stream, String)> = all[all.len() - 4..]
            .iter()
            .map(|e| (e.stream, text(e)))
            .collect();
        let xs = "x".repeat(20_000 - 16 * 1024);
        assert_eq!(
            tail,
            vec![
                (Stream::Stdout, format!("{xs}\n")),
                (Stream::Stdout, "\u{fffd}\u{fffd} bin\n".into()),
                (Stream::Stderr, "last-err\n".into()),
                (Stream::Stdout, "no-newline".into()),
            ]
        );
        let bin = &all[all.len() - 3];
        assert_eq!(
            bin.log, b"\xff\xfe bin\n",
            "not-UTF-8 bytes come back exactly"
        );
        let raw = std::fs::read_to_string(&log).unwrap();
        assert!(
            raw.contains("{\"log\":\"\u{fffd}\u{fffd} bin\\n\",\"stream\":\"stdout\",\"time\":"),
            "{raw}"
        );
        assert!(raw.contains(r#","raw":"//4gYmluCg=="}"#), "{raw}");
        let long: Vec<&Entry> = all
            .iter()
            .filter(|e| e.log.first() == Some(&b'x'))
            .collect();
        assert_eq!(long.len(), 2, "a 20000-byte line is 16 KiB + the rest");
        assert_eq!(long[0].log.len(), 16 * 1024);
        assert!(long[0].partial() && !long[1].partial());
        assert_eq!(long[0].log.len() + long[1].log.len(), 20_001);
        // The older lines: contiguous up to the last one of each stream, the oldest rotated out.
        for (stream, word) in [(Stream::Stdout, "out"), (Stream::Stderr, "err")] {
            let n = numbered(&all, stream, word);
            assert!(!n.is_empty() && n[0] > 0, "{word}: {n:?}");
            assert_eq!(n, (n[0]..300).collect::<Vec<_>>(), "{word}");
        }
        // The times go forward.
        assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
        let now = logs::now_nanos();
        assert!(all
            .iter()
            .all(|e| e.time > now - 120_000_000_000 && e.time <= now));
    });
}

#[test]
fn follow_ends_when_the_container_exited_and_the_logger_is_done() {
    with_containerd(|c| {
        let dir = tempdir();
        let log = dir.path().join("f-json.log");
        let uri = logs::logger_uri(&logger(), &log, WriterOptions::default(), false);
        let id = unique("klogs-follow");
        let _rm = Removed(c, id.clone());
        c.ctr(&["run", "-d", "--runtime", &shim(), "--log-uri", &uri])
            .args([BUSYBOX_IMAGE, id.as_str(), "sh", "-c"])
            .arg("echo started; sleep 2; echo finished; echo bye >&2")
            .timeout(Duration::from_secs(60))
            .ok();
        assert!(
            wait_until(Duration::from_secs(10), || entries(&log)
                .iter()
                .any(|e| e.log == b"started\n")),
            "no first line in {log:?}"
        );
        assert!(
            !logs::wait_writer_done(&log, Duration::from_millis(200)),
            "the logger of a running container must hold its lock"
        );

        let deadline = Instant::now() + Duration::from_secs(30);
        let q = LogQuery {
            follow: true,
            tail: Some(0),
            ..LogQuery::default()
        };
        let mut got = Vec::new();
        logs::read(
            &log,
            &q,
            &|| logs::wait_writer_done(&log, Duration::ZERO) || Instant::now() > deadline,
            |e| {
                got.push((e.stream, text(&e)));
                true
            },
        )
        .unwrap();
        assert!(Instant::now() < deadline, "follow did not end: {got:?}");
        // stdout and stderr are two pipes, copied as they come: their lines may interleave
        // either way (as under Docker), so only what arrived is compared, not the order.
        got.sort_by_key(|(stream, _)| *stream == Stream::Stderr);
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "finished\n".to_string()),
                (Stream::Stderr, "bye\n".to_string())
            ]
        );
        let status = c.ctr(&["task", "ls"]).ok().stdout;
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("STOPPED")),
            "{status}"
        );
    });
}

/// A terminal's output: only stdout, written as it comes (a prompt without a newline is in the
/// log before the line ends), `\r\n` as the pty makes it.
#[test]
fn terminal_output_goes_to_stdout_as_it_comes() {
    require_root();
    let namespace = unique("klogs-ns");
    let id = unique("klogs-tty");
    let dir = tempdir();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    Cmd::new(kapsel_integration_tests::env::runtime_binary())
        .arg("spec")
        .current_dir(&bundle)
        .ok();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["root"]["path"] = serde_json::json!("rootfs");
    config["process"]["terminal"] = serde_json::json!(true);
    config["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "printf 'prompt> '; sleep 1; echo done; echo err >&2"
    ]);
    config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{namespace}/{id}"));
    std::fs::write(&config_path, config.to_string()).unwrap();

    // kapseld's own shim client; no daemon listens for the events (the shim retries them).
    let spec = tasks::ShimSpec {
        id: id.clone(),
        namespace: namespace.clone(),
        bundle: bundle.clone(),
        runtime_binary: Some(kapsel_integration_tests::env::runtime_binary()),
        shim_binary: PathBuf::from(shim()),
        daemon_address: dir.path().join("no-kapseld.sock"),
    };
    let shim = tasks::start_shim(&spec).expect("start the shim");
    let shim_pid = shim.connect_info().unwrap().0 as i32;
    let log = dir.path().join("t-json.log");
    let bind = kapsel_manager::snapshots::Mount {
        kind: "bind".into(),
        source: Fixtures::get().rootfs().display().to_string(),
        target: None,
        options: vec!["rbind".into(), "ro".into()],
    };
    let stdio = tasks::Stdio {
        stdout: logs::logger_uri(&logger(), &log, WriterOptions::default(), true),
        terminal: true,
        ..Default::default()
    };
    let created = shim.create(vec![bind], &stdio);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        created.expect("create with a terminal and the logger");
        shim.start(None).unwrap();
        assert_eq!(shim.wait(None).unwrap().exit_status, 0);
        assert!(logs::wait_writer_done(&log, Duration::from_secs(10)));
        let all = entries(&log);
        assert!(all.iter().all(|e| e.stream == Stream::Stdout), "{all:?}");
        let joined: Vec<u8> = all.iter().flat_map(|e| e.log.clone()).collect();
        assert_eq!(
            String::from_utf8_lossy(&joined),
            "prompt> done\r\nerr\r\n",
            "{all:?}"
        );
        // The prompt was written when it came, a second before its line ended.
        assert_eq!(all[0].log, b"prompt> ");
        let done = all.iter().find(|e| text(e).contains("done")).unwrap();
        assert!(
            done.time - all[0].time >= 800_000_000,
            "prompt at {} and done at {}",
            all[0].time,
            done.time
        );
    }));
    let _ = shim.delete(None);
    let _ = shim.shutdown(false);
    assert!(
        wait_until(Duration::from_secs(10), || !pid_alive(shim_pid)),
        "shim {shim_pid} still running after Shutdown"
    );
    let _ = std::fs::remove_dir(Path::new("/run/kapsel/shim-runtime").join(&namespace));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
