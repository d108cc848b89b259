//! File descriptor plumbing: pipes to hand to a container, receiving a pty
//! master over a unix socket (SCM_RIGHTS), reading a fd with a deadline.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A pipe (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert!(rc == 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A close-on-exec duplicate of `fd` numbered 100 or above, so that handing
/// it to a child with [`crate::Cmd::pass_fd`] cannot clash with the target numbers.
pub fn dup_high(fd: &OwnedFd) -> OwnedFd {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an open fd has no memory-safety preconditions.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    assert!(new >= 0, "F_DUPFD_CLOEXEC: {}", io::Error::last_os_error());
    // SAFETY: new is a freshly made fd that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(new) }
}

/// The inode number of an open fd (for a pipe, the N of `pipe:[N]` in /proc/*/fd).
pub fn fd_inode(fd: &OwnedFd) -> u64 {
    // SAFETY: an all-zero stat is a valid value of a plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for as long as the borrow lasts; st is a valid out pointer.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    assert!(rc == 0, "fstat: {}", io::Error::last_os_error());
    st.st_ino
}

/// Receive one file descriptor sent with SCM_RIGHTS (as `--console-socket` does).
pub fn recv_fd(stream: &UnixStream, timeout: Duration) -> io::Result<OwnedFd> {
    stream.set_read_timeout(Some(timeout))?;
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one control message carrying a few fds (8-byte aligned).
    let mut cmsg_buf = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths); the
    // fields we need are set right below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    // SAFETY: msg points at live buffers (data, iov, cmsg_buf) of the sizes given.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received = Vec::new();
    // SAFETY: msg was filled by recvmsg; the CMSG_* macros walk its control
    // buffer within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = payload / std::mem::size_of::<RawFd>();
                let first = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    received.push(first.add(i).read_unaligned());
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // SAFETY: every fd in `received` was just installed in this process by the
    // kernel and belongs to nobody else.
    let mut owned: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.len() != 1 {
        return Err(io::Error::other(format!(
            "expected one fd in the message ({} bytes of data: {:?}), got {}",
            n,
            String::from_utf8_lossy(&data[..n as usize]),
            owned.len()
        )));
    }
    Ok(owned.remove(0))
}

/// Read from `fd` until EOF (or EIO, which a pty master returns once the last
/// slave is closed) or until `timeout` passes; returns what was read.
pub fn read_until_eof(fd: &OwnedFd, timeout: Duration) -> Vec<u8> {
    read_until(fd, timeout, |_| false)
}

/// Read from `fd` until `done(bytes so far)` holds, EOF/EIO, or `timeout`.
pub fn read_until(fd: &OwnedFd, timeout: Duration, mut done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if done(&out) {
            return out;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        if rc == 0 {
            continue;
        }
        // SAFETY: buf is a valid writable buffer of buf.len() bytes; fd is open.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            out.extend_from_slice(&buf[..n as usize]);
        } else if n == 0 {
            return out;
        } else {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                Some(libc::EIO) => return out,
                _ => panic!("read: {e}"),
            }
        }
    }
}

/// Write all of `bytes` to `fd`.
pub fn write_all(fd: &OwnedFd, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: rest is a valid readable buffer; fd is open.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("write: {e}");
        }
        rest = &rest[n as usize..];
    }
}
