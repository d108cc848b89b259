//! `kapsel-it-reaper REPORT -- PROGRAM [ARGS...]`: run PROGRAM as a child of a
//! child subreaper, so that every process PROGRAM leaves behind (orphans,
//! however many times they forked or called setsid) is re-parented to us.
//! After PROGRAM exits, give leftovers two seconds to go, then write the pids
//! and command lines of those still alive to REPORT (one per line; an empty
//! file means nothing was left), SIGKILL and reap them, and exit with
//! PROGRAM's status (128+N for a signal).
//!
//! The integration tests run a `create` that must fail through it: a failed
//! create must not leave a process behind.
//!
//! `kapsel-it-reaper --hold -- PROGRAM [ARGS...]`: reap PROGRAM's orphans as they exit
//! (kapseld's shims, which outlive a SIGKILLed kapseld), and after PROGRAM exits keep doing so,
//! without killing anything, until no descendant is left.

use std::fs;
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 4 && args[1] == "--hold" && args[2] == "--" {
        return hold(&args[3], &args[4..]);
    }
    if args.len() < 4 || args[2] != "--" {
        eprintln!("usage: kapsel-it-reaper REPORT -- PROGRAM [ARGS...]");
        return ExitCode::from(2);
    }
    let report = &args[1];
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(2);
    }
    let status = match Command::new(&args[3]).args(&args[4..]).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot run {}: {e}", args[3]);
            return ExitCode::from(2);
        }
    };

    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = children();
    while !left.is_empty() && Instant::now() < deadline {
        reap_zombies();
        thread::sleep(Duration::from_millis(20));
        left = children();
    }
    let lines: Vec<String> = left
        .iter()
        .map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            format!("{pid} {}", cmdline.trim())
        })
        .collect();
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    if let Err(e) = fs::write(report, text) {
        eprintln!("cannot write {report}: {e}");
    }
    for pid in &left {
        // SAFETY: kill has no memory-safety preconditions; pid is our own child.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !children().is_empty() && Instant::now() < deadline {
        reap_zombies();
        thread::sleep(Duration::from_millis(20));
    }
    reap_zombies();

    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 2,
    };
    ExitCode::from(code as u8)
}

/// `--hold`: run the program, reap everything that exits under us, return when no child is
/// left, with the program's status.
fn hold(program: &str, args: &[String]) -> ExitCode {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(2);
    }
    let child = match Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run {program}: {e}");
            return ExitCode::from(2);
        }
    };
    let main = child.id() as i32;
    let mut code = 2;
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer; waitpid blocks until a child changes state.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            // ECHILD: nothing left under us.
            return ExitCode::from(code as u8);
        }
        if pid == main {
            code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
    }
}

/// Live (non-zombie) children of this process.
fn children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 1 && fields[1] == me && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

fn reap_zombies() {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}
