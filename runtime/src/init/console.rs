//! The container's terminal: a pty from the container's own devpts, the master sent over the
//! console socket (SCM_RIGHTS, as runc's `--console-socket` contract), the slave as stdio and
//! controlling terminal.

use super::InitError;
use crate::spec::ConsoleSize;
use crate::syscall::Kernel;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};

pub fn setup(
    k: &dyn Kernel,
    socket: Option<&OwnedFd>,
    size: Option<ConsoleSize>,
) -> Result<(), InitError> {
    let socket = socket.ok_or_else(|| {
        InitError::Config(
            "process.terminal is true: a --console-socket is needed to pass the terminal".into(),
        )
    })?;
    let sys = |what: &str| {
        let what = what.to_string();
        move |source: std::io::Error| InitError::Sys { what, source }
    };
    let (master, slave_name) = k.open_pty().map_err(sys("open /dev/ptmx"))?;
    if let Some(sz) = size {
        set_size(master.as_raw_fd(), sz).map_err(sys("set console size"))?;
    }
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_name)
        .map_err(sys(&format!("open {slave_name}")))?;
    send_fd(
        socket.as_raw_fd(),
        master.as_raw_fd(),
        slave_name.as_bytes(),
    )
    .map_err(sys("send the console to --console-socket"))?;
    drop(master);
    k.setsid().map_err(sys("setsid"))?;
    for target in 0..3 {
        // SAFETY: dup2 onto the stdio numbers; the slave descriptor stays valid throughout.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(sys("dup2 console")(std::io::Error::last_os_error()));
        }
    }
    // SAFETY: TIOCSCTTY takes an int argument; fd 0 is the pty slave we just installed.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(sys("set controlling terminal")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub fn set_size(fd: i32, sz: ConsoleSize) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: sz.height,
        ws_col: sz.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that outlives the call.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `fd` over the unix socket `sock` with `name` as the payload.
pub fn send_fd(sock: i32, fd: i32, name: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [IoSlice::new(name)];
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receives one descriptor sent with [`send_fd`].
pub fn recv_fd(sock: i32) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([i32; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "no file descriptor received on the console socket",
    ))
}
