//! `start`: release a created container's process through its exec fifo.

use super::{Global, Result};
use crate::container::{Container, ContainerError, Status};
use std::time::Duration;

pub fn run(g: &Global, id: &str) -> Result<i32> {
    let c = Container::load(&g.root, id)?;
    let status = c.status();
    if status != Status::Created {
        return Err(ContainerError::WrongState {
            id: id.into(),
            status,
            op: "start it",
            hint: if status == Status::Stopped {
                " (it has already run)"
            } else {
                ""
            },
        }
        .into());
    }
    let fifo = c.dir.join("exec.fifo");
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        &fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| anyhow::anyhow!("open {}: {e}", fifo.display()))?;
    // Wait for init's byte; init dying shows as the pidfd becoming readable.
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let pidfd = crate::container::pidfd_open(c.state.init_pid);
    loop {
        let mut fds = vec![PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => anyhow::bail!("waiting on exec.fifo: {e}"),
            Ok(_) => {}
        }
        let mut buf = [0u8; 1];
        match nix::unistd::read(&fd, &mut buf) {
            Ok(1) => break,
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {
                if !c.init_alive() {
                    anyhow::bail!("container {id:?} init exited before it could be started");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => anyhow::bail!("read exec.fifo: {e}"),
        }
    }
    let _ = std::fs::remove_file(&fifo);
    super::run_poststart(&c);
    Ok(0)
}
