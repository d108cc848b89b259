//! The `kapsel-logger` binary run as the shim runs it (stdout on fd 3, stderr on fd 4, ready =
//! fd 5 closed), without root: readiness and the lock, a prompt written before its newline,
//! the end of both streams, SIGTERM, refused arguments.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kapsel_manager::logs::{self, Entry, Stream};

struct Logger {
    child: Child,
    stdout: Option<File>,
    stderr: Option<File>,
}

/// Close-on-exec: the tests run in parallel, and one logger must not hold another's pipes.
fn pipe() -> (File, File) {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (File::from(r), File::from(w))
}

/// Start the logger with `args`; returns once it closed fd 5.
fn start(args: &[&str]) -> Logger {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let (mut ready_r, ready_w) = pipe();
    // Numbers far above 5 (close-on-exec), so that placing them at 3, 4, 5 in the child
    // cannot overwrite one another.
    let high: Vec<OwnedFd> = [out_r.as_fd(), err_r.as_fd(), ready_w.as_fd()]
        .into_iter()
        .map(|fd| {
            let n = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).unwrap();
            // SAFETY: fcntl just returned this new descriptor; nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(n) }
        })
        .collect();
    let sources: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kapsel-logger"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .env("CONTAINER_ID", "c1")
        .env("CONTAINER_NAMESPACE", "test");
    // SAFETY: runs in the forked child before exec; dup2 is async-signal-safe and only the
    // copied fd numbers are used (dup2 leaves the targets without close-on-exec).
    unsafe {
        cmd.pre_exec(move || {
            for (target, source) in (3..).zip(&sources) {
                if libc::dup2(*source, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop((out_r, err_r, ready_w, high));
    let mut buf = [0u8; 1];
    assert_eq!(ready_r.read(&mut buf).unwrap(), 0, "fd 5 closed");
    Logger {
        child,
        stdout: Some(out_w),
        stderr: Some(err_w),
    }
}

fn entries(log: &Path) -> Vec<Entry> {
    logs::read_all(log).unwrap()
}

fn wait_for(log: &Path, limit: Duration, want: impl Fn(&[Entry]) -> bool) -> Vec<Entry> {
    let deadline = Instant::now() + limit;
    loop {
        let all = entries(log);
        if want(&all) || Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ready_means_locked_and_the_end_of_both_streams_means_done() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sub/c1-json.log");
    let path = log.to_str().unwrap();
    let mut l = start(&["path", path, "max-size", "1k", "max-file", "2"]);
    assert!(!logs::wait_writer_done(&log, Duration::from_millis(50)));
    let (mut out, mut err) = (l.stdout.take().unwrap(), l.stderr.take().unwrap());
    out.write_all(b"hello\nprompt> ").unwrap();
    err.write_all(b"oops\n").unwrap();
    // No newline after the prompt: it is written as a partial entry after a short pause.
    let all = wait_for(&log, Duration::from_secs(5), |a| a.len() == 3);
    let mut got: Vec<(Stream, &[u8])> = all.iter().map(|e| (e.stream, &e.log[..])).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (Stream::Stdout, &b"hello\n"[..]),
            (Stream::Stdout, b"prompt> "),
            (Stream::Stderr, b"oops\n")
        ]
    );
    // stderr ends first; the logger goes on with stdout.
    drop(err);
    for i in 0..40 {
        writeln!(out, "line {i}").unwrap();
    }
    out.write_all(b"last without newline").unwrap();
    drop(out);
    assert!(logs::wait_writer_done(&log, Duration::from_secs(5)));
    let status = l.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let all = entries(&log);
    assert_eq!(all.last().unwrap().log, b"last without newline");
    assert!(logs::rotated_path(&log, 1).exists(), "max-size 1k rotated");
    assert!(
        !logs::rotated_path(&log, 2).exists(),
        "max-file 2 keeps two"
    );
}

#[test]
fn sigterm_writes_what_the_pipes_hold_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c1-json.log");
    let mut l = start(&["path", log.to_str().unwrap()]);
    let mut out = l.stdout.take().unwrap();
    // SIGSTOP keeps the logger from reading while the pipe fills and SIGTERM is queued.
    let pid = nix::unistd::Pid::from_raw(l.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
    for i in 0..100 {
        writeln!(out, "queued {i}").unwrap();
    }
    out.write_all(b"half").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT).unwrap();
    let status = l.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let all = entries(&log);
    assert_eq!(all.len(), 101, "{all:?}");
    assert_eq!(all[99].log, b"queued 99\n");
    assert_eq!(all[100].log, b"half");
    assert!(logs::wait_writer_done(&log, Duration::ZERO));
    drop(out);
}

#[test]
fn terminal_output_is_written_as_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c1-json.log");
    let mut l = start(&["path", log.to_str().unwrap(), "tty", "true"]);
    drop(l.stderr.take());
    let mut out = l.stdout.take().unwrap();
    let t = Instant::now();
    out.write_all(b"$ ").unwrap();
    let all = wait_for(&log, Duration::from_secs(5), |a| !a.is_empty());
    // Without a terminal the logger waits 100 ms for a newline; with one it writes at once.
    assert!(t.elapsed() < Duration::from_millis(90), "{:?}", t.elapsed());
    assert_eq!(all[0].log, b"$ ");
    drop(out);
    assert!(l.child.wait().unwrap().success());
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_kapsel-logger"))
        .args(["max-size", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max-size \"lots\""), "{err}");
}
