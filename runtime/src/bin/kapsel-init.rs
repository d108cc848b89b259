//! kapsel-init: the PID 1 of `kapsel run --init` (Docker's `docker-init`), bind-mounted at
//! /sbin/kapsel-init and run as `kapsel-init -- CMD ARGS...`.
//!
//! - runs CMD as its child, in a process group of its own that it makes the terminal's
//!   foreground group when stdin is a terminal (so Ctrl-C reaches the command, not init);
//! - forwards every signal it receives (SIGTERM from `kapsel stop`, SIGHUP, SIGUSR1...) to the
//!   child;
//! - reaps every process that ends up as its child (orphans reparented to PID 1, or to it as a
//!   child subreaper when it is not PID 1);
//! - exits with the child's status: its exit code, or 128 + the signal that killed it.
//!   127 when CMD is not found, 126 when it cannot be run.
//!
//! Linked statically (scripts/build-release.sh): the container's image may have no libc.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgrp, isatty, tcgetpgrp, tcsetpgrp, Pid};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    if args.is_empty() || args[0] == "-h" || args[0] == "--help" {
        eprintln!("usage: kapsel-init [--] COMMAND [ARG...]");
        return ExitCode::from(2);
    }
    ExitCode::from(run(&args))
}

fn run(args: &[String]) -> u8 {
    // Not needed as PID 1 (which the kernel makes the reaper of orphans anyway), but with
    // `--pid host` or in tests init is an ordinary process.
    let _ = nix::sys::prctl::set_child_subreaper(true);

    // Every signal waits in the mask for sigwait below; the child empties its mask before
    // exec (std's spawn keeps the parent's).
    let all = SigSet::all();
    if let Err(e) = all.thread_block() {
        eprintln!("kapsel-init: block signals: {e}");
        return 126;
    }

    let stdin_is_tty = isatty(std::io::stdin()).unwrap_or(false)
        && tcgetpgrp(std::io::stdin()).ok() == Some(getpgrp());
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]).process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (tcsetpgrp, getpgrp, sigprocmask); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if stdin_is_tty {
                // The child's new group takes the terminal. SIGTTOU, which a background group
                // calling tcsetpgrp would get, is still blocked here.
                tcsetpgrp(std::io::stdin(), getpgrp())?;
            }
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => Pid::from_raw(c.id() as i32),
        Err(e) => {
            eprintln!("kapsel-init: exec {}: {e}", args[0]);
            return match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
        }
    };

    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("kapsel-init: wait for signals: {e}");
                return 126;
            }
        };
        if sig != Signal::SIGCHLD {
            // The child may already be gone; its exit shows up as SIGCHLD.
            let _ = kill(child, sig);
            continue;
        }
        if let Some(code) = reap(child) {
            return code;
        }
    }
}

/// Reaps every exited child; the main child's exit status once it is among them.
fn reap(main: Pid) -> Option<u8> {
    let mut status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => status = Some(code as u8),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => {
                status = Some(128u8.wrapping_add(sig as u8))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return status,
            Ok(_) => {}
        }
    }
}
