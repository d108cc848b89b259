//! `run`: create and start in one go. In the foreground the runtime stays the container's
//! parent: it forwards signals, returns the container's exit code and deletes it afterwards
//! (unless `--keep`).

use super::{check_systemd, Global, Result};
use crate::container::create::{create, CreateOpts, Mode};
use crate::container::Container;
use nix::sys::signal::{SigSet, Signal};
use std::time::Duration;

pub fn run(g: &Global, opts: CreateOpts, detach: bool, keep: bool) -> Result<i32> {
    check_systemd(g)?;
    if detach {
        let c = create(&opts, Mode::Run)?;
        super::run_poststart(&c);
        return Ok(0);
    }
    // Orphans of the container (and init itself when it was cloned by a stage1 process) come
    // back to us to be reaped.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| anyhow::anyhow!("become child subreaper: {e}"))?;
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGPIPE,
    ] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| anyhow::anyhow!("block signals: {e}"))?;
    let c = match create(&opts, Mode::Run) {
        Ok(c) => c,
        Err(e) => {
            let _ = set.thread_unblock();
            return Err(e.into());
        }
    };
    super::run_poststart(&c);
    let code = forward_until_exit(&c, &set);
    if !keep {
        c.destroy()?;
    }
    Ok(code)
}

/// Forwards signals to init until it exits; reaps every child that comes back to us.
fn forward_until_exit(c: &Container, set: &SigSet) -> i32 {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let init = c.state.init_pid;
    loop {
        // Reap first: init may already be gone.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == init => return code,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == init => {
                    return 128 + sig as i32
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => continue,
            Ok(Signal::SIGPIPE) => continue,
            Ok(sig) => {
                // SAFETY: kill takes integers.
                unsafe { libc::kill(init, sig as i32) };
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}
