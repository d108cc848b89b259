//! `run`: create and start in one go. In the foreground the runtime stays the container's
//! parent: it forwards signals, relays a terminal when there is no `--console-socket`, returns
//! the container's exit code and deletes the container afterwards (unless `--keep`).

use super::{check_systemd, Global, Result};
use crate::container::create::{create, create_with_console, CreateOpts, Mode};
use crate::container::Spec;
use crate::process::relay;
use std::os::fd::{AsRawFd, OwnedFd};

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
    let set = relay::forwarded_signals();
    set.thread_block()
        .map_err(|e| anyhow::anyhow!("block signals: {e}"))?;
    // A terminal without a console socket: take the pty master ourselves and relay it.
    let bundle = crate::container::create::absolute(&opts.bundle)?;
    let wants_tty =
        opts.console_socket.is_none() && Spec::load(&bundle).is_ok_and(|s| s.process().terminal);
    let (ours, theirs) = if wants_tty {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        (Some(OwnedFd::from(a)), Some(OwnedFd::from(b)))
    } else {
        (None, None)
    };
    let c = match create_with_console(&opts, Mode::Run, theirs) {
        Ok(c) => c,
        Err(e) => {
            let _ = set.thread_unblock();
            return Err(e.into());
        }
    };
    let master = match &ours {
        Some(sock) => Some(crate::init::console::recv_fd(sock.as_raw_fd())?),
        None => None,
    };
    super::run_poststart(&c);
    let code = relay::wait(c.state.init_pid, &set, master);
    if !keep {
        c.destroy()?;
    }
    Ok(code)
}
