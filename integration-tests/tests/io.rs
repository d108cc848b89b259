//! The container's I/O: a pty master handed over `--console-socket`, extra fds
//! with `--preserve-fds`, and the runtime's own `--log --log-format json`.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use kapsel_integration_tests::fd::{
    dup_high, fd_inode, pipe, read_until, read_until_eof, recv_fd, write_all,
};
use kapsel_integration_tests::{Bundle, Cmd, CmdOutput, Runtime, SETTLE};
use serde_json::{json, Value};

/// Run `cmd` (which connects to the socket at `sock`) and receive the fd it sends.
fn run_with_console_socket(cmd: Cmd, sock: &Path) -> (OwnedFd, CmdOutput) {
    let listener = UnixListener::bind(sock).expect("bind the console socket");
    listener.set_nonblocking(true).unwrap();
    let mut running = cmd.spawn();
    let deadline = Instant::now() + SETTLE;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if running.try_finished() {
                    let out = running.wait();
                    panic!("the runtime exited without connecting to the console socket:\n{out}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no connection on the console socket"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    let master = recv_fd(&stream, SETTLE).expect("receive the pty master");
    let out = running.wait();
    (master, out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn console_socket_receives_the_pty_master() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/terminal", json!(true))
        .sh("tty; echo hi; [ -t 0 ] && [ -t 1 ] && echo all-tty");
    let id = rt.new_id("console");
    let sock = b.path().join("console.sock");
    let create = rt.command(&[
        "create",
        "--bundle",
        b.dir_str(),
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    let (master, out) = run_with_console_socket(create, &sock);
    assert!(out.success(), "create with a console socket:\n{out}");
    rt.run_ok(&["start", &id]);
    let output = text(&read_until_eof(&master, SETTLE));
    // A pty turns \n into \r\n.
    assert!(output.contains("/dev/pts/0\r\n"), "tty inside: {output:?}");
    assert!(output.contains("hi\r\n"), "{output:?}");
    assert!(
        output.contains("all-tty\r\n"),
        "stdin/stdout are not the tty: {output:?}"
    );
    rt.wait_status(&id, "stopped", SETTLE);
}

#[test]
fn console_input_reaches_the_container() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/terminal", json!(true))
        .sh("echo ready; read line; echo \"got:$line\"");
    let id = rt.new_id("console-in");
    let sock = b.path().join("console.sock");
    let create = rt.command(&[
        "create",
        "--bundle",
        b.dir_str(),
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    let (master, out) = run_with_console_socket(create, &sock);
    assert!(out.success(), "{out}");
    rt.run_ok(&["start", &id]);
    let first = read_until(&master, SETTLE, |b| text(b).contains("ready"));
    assert!(text(&first).contains("ready"), "{:?}", text(&first));
    write_all(&master, b"typed words\n");
    let rest = text(&read_until_eof(&master, SETTLE));
    assert!(rest.contains("got:typed words"), "{rest:?}");
}

#[test]
fn exec_tty_with_console_socket() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("exec-tty");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let sock = b.path().join("exec-console.sock");
    let exec = rt.command(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "tty; echo exec-hi",
    ]);
    let (master, out) = run_with_console_socket(exec, &sock);
    assert!(out.success(), "exec -t:\n{out}");
    let output = text(&read_until_eof(&master, SETTLE));
    assert!(output.contains("/dev/pts/"), "{output:?}");
    assert!(output.contains("exec-hi\r\n"), "{output:?}");
}

#[test]
fn terminal_without_console_socket_fails_create() {
    // runc: "cannot allocate tty if runc will detach without setting console socket".
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/terminal", json!(true)).args(&["true"]);
    let id = rt.new_id("tty-nosock");
    rt.create_must_fail(&b, &id, &[]);
}

#[test]
fn preserve_fds_passes_exactly_the_extra_fds() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh("echo via-fd3 >&3; ls -l /proc/self/fd");
    let (r, w_low) = pipe();
    let (_leak_r, leak_low) = pipe();
    // Numbered >= 100 so that moving them to 3 and 20 in the child cannot clash;
    // the low originals are closed at once so that only the container holds the pipe.
    let w = dup_high(&w_low);
    let leak_w = dup_high(&leak_low);
    drop(w_low);
    drop(leak_low);
    let wanted = fd_inode(&w);
    let leaked = fd_inode(&leak_w);
    let id = rt.new_id("preserve");
    let out = rt
        .command(&["run", "--preserve-fds", "1", "--bundle", b.dir_str(), &id])
        .pass_fd(w.as_raw_fd(), 3)
        .pass_fd(leak_w.as_raw_fd(), 20)
        .output();
    drop(w);
    drop(leak_w);
    assert!(out.success(), "{out}");
    let through = text(&read_until_eof(&r, SETTLE));
    assert_eq!(through, "via-fd3\n", "what the container wrote to fd 3");

    // `ls -l` lines: "lrwx------ 1 0 0 64 Jan 1 00:00 3 -> pipe:[123]"
    let mut fds = Vec::new();
    for line in out.stdout.lines() {
        let Some((left, target)) = line.split_once(" -> ") else {
            continue;
        };
        let n: i32 = left.split_whitespace().last().unwrap().parse().unwrap();
        fds.push((n, target.to_string()));
    }
    let numbers: Vec<i32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers[..4], [0, 1, 2, 3], "fds inside:\n{}", out.stdout);
    assert_eq!(
        fds[3].1,
        format!("pipe:[{wanted}]"),
        "fd 3 is not our pipe:\n{}",
        out.stdout
    );
    // Besides 0-3 only the directory ls itself opened may be there.
    let extra: Vec<&(i32, String)> = fds.iter().filter(|(n, _)| *n > 3).collect();
    assert!(
        extra.len() <= 1,
        "fds leaked into the container:\n{}",
        out.stdout
    );
    for (n, target) in &extra {
        assert_ne!(
            *target,
            format!("pipe:[{leaked}]"),
            "fd {n} leaked:\n{}",
            out.stdout
        );
        assert!(
            target.ends_with("/fd") || target.starts_with("/proc"),
            "fd {n} -> {target}"
        );
    }
}

#[test]
fn without_preserve_fds_nothing_extra_is_passed() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["ls", "/proc/self/fd"]);
    let (_r, w) = pipe();
    let w = dup_high(&w);
    let id = rt.new_id("no-preserve");
    let out = rt
        .command(&["run", "--bundle", b.dir_str(), &id])
        .pass_fd(w.as_raw_fd(), 3)
        .output();
    assert!(out.success(), "{out}");
    let fds: Vec<i32> = out
        .stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    // 0, 1, 2 and ls's own directory fd (which takes the lowest free number, 3).
    assert_eq!(fds, [0, 1, 2, 3], "{out}");
}

#[test]
fn log_json_records_errors() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/args", json!([]));
    let log = b.path().join("runtime.log");
    let id = rt.new_id("log-json");
    let out = rt.cmd(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b.dir_str(),
        &id,
    ]);
    assert!(out.code.is_some_and(|c| c != 0), "{out}");
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("no log file ({e}):\n{out}"));
    let errors: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"))
        })
        .filter(|v: &Value| v["level"] == "error")
        .collect();
    assert!(!errors.is_empty(), "no error record in the log:\n{text}");
    assert!(
        errors
            .iter()
            .all(|v| v["msg"].as_str().is_some_and(|m| !m.is_empty())),
        "{text}"
    );
    assert!(errors.iter().all(|v| v["time"].is_string()), "{text}");
}

#[test]
fn log_json_names_a_missing_executable() {
    // What containerd's runc shim reads back from `--log` when create fails.
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["/bin/kt-no-such-program", "arg"]);
    let log = b.path().join("runtime.log");
    let id = rt.new_id("log-noexe");
    let out = rt.cmd(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b.dir_str(),
        &id,
    ]);
    assert!(out.code.is_some_and(|c| c != 0), "{out}");
    rt.assert_nothing_left(&b, &id, &out);
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("no log file ({e}):\n{out}"));
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"))
        })
        .collect();
    assert!(
        records.iter().any(|v| v["level"] == "error"
            && v["msg"]
                .as_str()
                .is_some_and(|m| m.contains("/bin/kt-no-such-program"))),
        "no error record naming the executable in the log:\n{text}"
    );
}
