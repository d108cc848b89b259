//! OOM-kill notification for one container's memory cgroup, on a thread of its own that ends
//! when the cgroup is removed.
//!
//! - cgroup v1: an eventfd registered for `memory.oom_control` through `cgroup.event_control`;
//!   the kernel signals it on every OOM in the cgroup, and once more when the cgroup is removed
//!   (told apart by `cgroup.event_control` being gone).
//! - cgroup v2: inotify on `memory.events`; an increase of its `oom_kill` counter is an OOM kill.
//!   The watch ends (IN_IGNORED) when the cgroup is removed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::cgroup::Cgroup;

/// Stack of the watcher thread: it only reads small files and calls back.
const STACK: usize = 64 * 1024;

/// Call `on_oom` for every OOM kill in `cgroup` until the cgroup is removed.
pub fn watch(cgroup: &Cgroup, on_oom: impl Fn() + Send + 'static) -> std::io::Result<()> {
    match cgroup {
        Cgroup::V1Memory(dir) => watch_v1(dir, on_oom),
        Cgroup::V2(dir) => watch_v2(dir, on_oom),
    }
}

fn watch_v1(dir: &Path, on_oom: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?;
    let control = File::open(dir.join("memory.oom_control"))?;
    let event_control = dir.join("cgroup.event_control");
    std::fs::write(
        &event_control,
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )?;
    std::thread::Builder::new()
        .name("oom".into())
        .stack_size(STACK)
        .spawn(move || {
            // Kept open for as long as the registration lives.
            let _control = control;
            loop {
                match efd.read() {
                    Ok(_) if event_control.exists() => on_oom(),
                    Ok(_) => return,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
        })?;
    Ok(())
}

/// The `oom_kill` counter of a `memory.events` text.
fn oom_kills(events: &str) -> Option<u64> {
    events.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "oom_kill").then(|| v.trim().parse().ok())?
    })
}

fn read_oom_kills(path: &PathBuf) -> Option<u64> {
    oom_kills(&std::fs::read_to_string(path).ok()?)
}

fn watch_v2(dir: &Path, on_oom: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let events = dir.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
    let mut seen = read_oom_kills(&events).unwrap_or(0);
    std::thread::Builder::new()
        .name("oom".into())
        .stack_size(STACK)
        .spawn(move || loop {
            let gone = match inotify.read_events() {
                Ok(evs) => evs
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED)),
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            if let Some(n) = read_oom_kills(&events) {
                if n > seen {
                    seen = n;
                    on_oom();
                }
            }
            if gone {
                return;
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn parses_the_oom_kill_counter() {
        let text = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(text), Some(1));
        assert_eq!(oom_kills("low 0\n"), None);
    }

    /// A directory standing in for a v2 cgroup: increases of `oom_kill` are reported, other
    /// changes are not, and deleting the file ends the watch.
    #[test]
    fn v2_watch_reports_increases_and_ends_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        let (tx, rx) = mpsc::channel();
        watch(&Cgroup::V2(dir.path().to_path_buf()), move || {
            let _ = tx.send(());
        })
        .unwrap();
        std::fs::write(&events, "oom 1\noom_kill 0\n").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        std::fs::remove_file(&events).unwrap();
        // The thread ends and drops the sender.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
