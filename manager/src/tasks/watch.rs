//! One thread that notices processes ending — shims and the init processes of tasks — through
//! pidfds (`pidfd_open(2)`, readable once the process has exited, whoever its parent is), all
//! in one `poll(2)`. N running containers cost it 2N file descriptors and no thread of their
//! own. A process that is already gone when it is added is reported at once.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// Watches processes; `on_gone(key)` runs on the watcher's thread (it must not block) once
/// the process added under `key` has ended.
pub struct Watcher<K> {
    shared: Arc<Shared<K>>,
    wake: UnixStream,
}

struct Shared<K> {
    state: Mutex<State<K>>,
}

struct State<K> {
    next: u64,
    /// By token: the key and the pidfd (None: the process was gone before it could be opened).
    entries: HashMap<u64, (K, Option<OwnedFd>)>,
    /// Pidfds of removed entries: closed by the watcher's thread, which may be polling them.
    closing: Vec<OwnedFd>,
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it touches
    // no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl<K: Clone + Send + 'static> Watcher<K> {
    /// Starts the thread (`name`).
    pub fn start(name: &str, on_gone: impl Fn(K) + Send + 'static) -> std::io::Result<Watcher<K>> {
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next: 0,
                entries: HashMap::new(),
                closing: Vec::new(),
            }),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(256 * 1024)
            .spawn(move || run(&s, &wake_rx, on_gone))?;
        Ok(Watcher { shared, wake })
    }

    /// Watches `pid` under `key`.
    pub fn add(&self, pid: u32, key: K) {
        // ESRCH: already gone, reported by the thread at its next turn.
        let fd = pidfd_open(pid).ok();
        {
            let mut st = self.shared.state.lock().expect("watcher lock");
            let token = st.next;
            st.next += 1;
            st.entries.insert(token, (key, fd));
        }
        self.wake();
    }

    /// Stops watching whatever was added under a key that `matches`.
    pub fn remove(&self, matches: impl Fn(&K) -> bool) {
        {
            let mut st = self.shared.state.lock().expect("watcher lock");
            let gone: Vec<u64> = st
                .entries
                .iter()
                .filter(|(_, (k, _))| matches(k))
                .map(|(t, _)| *t)
                .collect();
            for t in gone {
                if let Some((_, Some(fd))) = st.entries.remove(&t) {
                    st.closing.push(fd);
                }
            }
        }
        self.wake();
    }

    /// How many processes are watched.
    pub fn len(&self) -> usize {
        self.shared
            .state
            .lock()
            .expect("watcher lock")
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake(&self) {
        // A full socket buffer already wakes the thread.
        let _ = (&self.wake).write(&[1]);
    }
}

fn run<K: Clone>(shared: &Shared<K>, wake: &UnixStream, on_gone: impl Fn(K)) {
    loop {
        let mut fired = Vec::new();
        let mut polled: Vec<(u64, RawFd)> = Vec::new();
        {
            let mut st = shared.state.lock().expect("watcher lock");
            st.closing.clear();
            let State { entries, .. } = &mut *st;
            entries.retain(|_, (key, fd)| match fd {
                None => {
                    fired.push(key.clone());
                    false
                }
                Some(_) => true,
            });
            for (t, (_, fd)) in entries.iter() {
                if let Some(fd) = fd {
                    polled.push((*t, fd.as_raw_fd()));
                }
            }
        }
        for key in fired {
            on_gone(key);
        }
        let mut fds: Vec<libc::pollfd> = std::iter::once(wake.as_raw_fd())
            .chain(polled.iter().map(|(_, fd)| *fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that outlives the call;
        // the descriptors stay open meanwhile (removed ones are only closed by this thread).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("process watcher: poll: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            continue;
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            while matches!((&*wake).read(&mut buf), Ok(n) if n > 0) {}
            if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                // The Watcher was dropped.
                return;
            }
        }
        let mut gone = Vec::new();
        {
            let mut st = shared.state.lock().expect("watcher lock");
            for (i, (token, _)) in polled.iter().enumerate() {
                if fds[i + 1].revents == 0 {
                    continue;
                }
                if let Some((key, fd)) = st.entries.remove(token) {
                    if let Some(fd) = fd {
                        st.closing.push(fd);
                    }
                    gone.push(key);
                }
            }
        }
        for key in gone {
            on_gone(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn ended_processes_are_reported_and_removed_ones_are_not() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let w = Watcher::start("test-watch", move |k: u32| {
            tx.lock().unwrap().send(k).unwrap();
        })
        .unwrap();
        let mut quick = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let mut slow = std::process::Command::new("sleep")
            .arg("0.4")
            .spawn()
            .unwrap();
        let mut long = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        w.add(quick.id(), 1);
        w.add(slow.id(), 2);
        w.add(long.id(), 3);
        w.remove(|k| *k == 2);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        quick.wait().unwrap();
        slow.wait().unwrap();
        // The removed one never shows; the long one has not ended.
        assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
        assert_eq!(w.len(), 1);
        long.kill().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
        long.wait().unwrap();
        // A process already reaped is reported at once.
        w.add(long.id(), 4);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 4);
        assert!(w.is_empty());
    }
}
