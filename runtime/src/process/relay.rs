//! The foreground side of `run` and `exec`: wait for the container's process while forwarding
//! signals to it, and — when it has a terminal but no `--console-socket` was given — copy
//! between our stdio and the pty master, with our terminal in raw mode and window size changes
//! passed on.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The signals the foreground runtime takes over; block them before the process is created so
/// that none is lost in between.
pub fn forwarded_signals() -> SigSet {
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
    set
}

/// Puts stdin in raw mode while alive, if it is a terminal.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

fn copy_winsize(from: i32, to: i32) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a winsize that outlives the calls.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

fn write_all(fd: i32, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: writes from a live buffer of the given length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Waits until `target` exits and returns its exit code (128+signal when killed), reaping any
/// other child on the way (the runtime may be a subreaper). Signals in `set` (already blocked)
/// go to `target`; `master`, if given, is relayed to and from our stdio.
pub fn wait(target: i32, set: &SigSet, master: Option<OwnedFd>) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let Ok(sfd) = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC) else {
        return crate::process::wait_exit(target).unwrap_or(255);
    };
    let _raw = master.as_ref().map(|_| RawMode::enter());
    if let Some(m) = &master {
        copy_winsize(0, m.as_raw_fd());
    }
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    let reap = || -> Option<i32> {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == target => return Some(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == target => {
                    return Some(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    };
    let mut exit: Option<i32> = reap();
    loop {
        if let Some(code) = exit {
            // Drain what the process wrote last before returning.
            if let Some(m) = master.as_ref().filter(|_| master_open) {
                let mut fds = [PollFd::new(m.as_fd(), PollFlags::POLLIN)];
                while poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0 {
                    match nix::unistd::read(m, &mut buf) {
                        Ok(n) if n > 0 => {
                            if !write_all(1, &buf[..n]) {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
            return code;
        }
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let master_idx = master.as_ref().filter(|_| master_open).map(|m| {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_idx = stdin_open.then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return crate::process::wait_exit(target).unwrap_or(255),
            Ok(_) => {}
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let m_ready = ready(master_idx);
        let in_ready = ready(stdin_idx);
        drop(fds);
        if sig_ready {
            if let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let Some(m) = &master {
                        copy_winsize(0, m.as_raw_fd());
                    }
                } else if sig != libc::SIGCHLD && sig != libc::SIGPIPE {
                    // SAFETY: kill takes integers.
                    unsafe { libc::kill(target, sig) };
                }
            }
            exit = reap();
        }
        if m_ready {
            let m = master.as_ref().expect("master polled");
            match nix::unistd::read(m, &mut buf) {
                Ok(n) if n > 0 => {
                    if !write_all(1, &buf[..n]) {
                        master_open = false;
                    }
                }
                // EIO: the last slave descriptor closed.
                _ => master_open = false,
            }
        }
        if in_ready {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let m = master.as_ref().expect("stdin relayed only with a master");
                    if !write_all(m.as_raw_fd(), &buf[..n]) {
                        stdin_open = false;
                    }
                }
                _ => stdin_open = false,
            }
        }
    }
}
