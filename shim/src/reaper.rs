//! The shim is the subreaper of everything it starts: the runtime binary, the container's init
//! (re-parented to us when the runtime exits) and exec'd processes. One thread reaps every child
//! on SIGCHLD and hands each exit status to whoever registered interest in that pid, or keeps it
//! until someone does (a detached exec can exit before we have read its pid file).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Exits nobody asked for yet are kept at most this many (orphans re-parented to us).
const MAX_UNCLAIMED: usize = 1024;

type Watcher = Box<dyn FnOnce(i32) + Send>;

#[derive(Default)]
struct Inner {
    unclaimed: HashMap<i32, i32>,
    order: VecDeque<i32>,
    watchers: HashMap<i32, Watcher>,
}

/// Dispatches child exit statuses (shell convention: 128+signal for a killed child).
#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

impl Reaper {
    /// Block SIGCHLD in the calling thread (call before any other thread exists, so every thread
    /// inherits the mask) and start the reaping thread.
    pub fn start() -> std::io::Result<Reaper> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        set.thread_block().map_err(std::io::Error::from)?;
        let r = Reaper::default();
        let r2 = r.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                if set.wait().is_ok() {
                    r2.reap_all();
                }
            })?;
        Ok(r)
    }

    fn reap_all(&self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            self.deliver(pid, status);
        }
    }

    fn deliver(&self, pid: i32, status: i32) {
        let watcher = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match g.watchers.remove(&pid) {
                Some(w) => Some(w),
                None => {
                    g.unclaimed.insert(pid, status);
                    g.order.push_back(pid);
                    while g.order.len() > MAX_UNCLAIMED {
                        if let Some(old) = g.order.pop_front() {
                            g.unclaimed.remove(&old);
                        }
                    }
                    None
                }
            }
        };
        if let Some(w) = watcher {
            w(status);
        }
    }

    /// Call `f` with the exit status of `pid` once it is reaped (at once if it already was).
    /// `f` runs on the reaping thread: it must not block.
    pub fn watch(&self, pid: i32, f: impl FnOnce(i32) + Send + 'static) {
        let status = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match g.unclaimed.remove(&pid) {
                Some(s) => {
                    g.order.retain(|p| *p != pid);
                    Some(s)
                }
                None => {
                    g.watchers.insert(pid, Box::new(f));
                    return;
                }
            }
        };
        if let Some(s) = status {
            f(s);
        }
    }

    /// A reaper for unit tests: polls only the pids someone waits for, so the children other
    /// tests of the same process wait for themselves are left alone.
    #[cfg(test)]
    pub fn polling_watched() -> Reaper {
        let r = Reaper::default();
        let r2 = r.clone();
        std::thread::spawn(move || loop {
            let pids: Vec<i32> = {
                let g = r2.inner.lock().unwrap_or_else(|e| e.into_inner());
                g.watchers.keys().copied().collect()
            };
            for pid in pids {
                let status = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                    _ => continue,
                };
                r2.deliver(pid, status);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        });
        r
    }

    /// Block until `pid` (a child we spawned) exits and return its status.
    pub fn wait(&self, pid: i32) -> i32 {
        let (tx, rx) = mpsc::channel();
        self.watch(pid, move |s| {
            let _ = tx.send(s);
        });
        rx.recv().unwrap_or(255)
    }
}

/// Make `cmd`'s child start with no signal blocked. Every thread of the shim keeps SIGCHLD
/// blocked for the reaper, and the mask survives fork and exec (Rust's `Command` does not
/// reset it): a logging binary that is a shell would wait for its children forever.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; sigemptyset and pthread_sigmask are
    // async-signal-safe and only touch the local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            if libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_start_with_no_signal_blocked() {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        set.thread_block().unwrap();
        let mut cmd = std::process::Command::new("grep");
        cmd.args(["SigBlk", "/proc/self/status"]);
        unblock_signals_in_child(&mut cmd);
        let out = cmd.output().unwrap();
        set.thread_unblock().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "SigBlk:\t0000000000000000"
        );
    }

    #[test]
    fn exit_before_watch_is_kept() {
        let r = Reaper::default();
        r.deliver(42, 3);
        assert_eq!(r.wait(42), 3);
    }

    #[test]
    fn watch_before_exit_fires_on_delivery() {
        let r = Reaper::default();
        let (tx, rx) = mpsc::channel();
        r.watch(7, move |s| tx.send(s).unwrap());
        assert!(rx.try_recv().is_err());
        r.deliver(7, 137);
        assert_eq!(rx.recv().unwrap(), 137);
    }

    #[test]
    fn unclaimed_exits_are_bounded() {
        let r = Reaper::default();
        for pid in 0..(MAX_UNCLAIMED as i32 + 10) {
            r.deliver(pid, 0);
        }
        let g = r.inner.lock().unwrap();
        assert_eq!(g.unclaimed.len(), MAX_UNCLAIMED);
        assert!(!g.unclaimed.contains_key(&0));
    }
}
