//! The runtime ↔ container-init protocol, over one `SOCK_SEQPACKET` socketpair (one message a
//! datagram, JSON encoded). The runtime is "parent"; "init" is the process that becomes the
//! container's pid 1; "stage1" exists only when namespaces are joined by path.
//!
//! ```text
//!  parent                         [stage1]                      init
//!  ------                         --------                      ----
//!  cgroup create + apply
//!  clone ------------------------------------------------------> waits for Go
//!        (or fork stage1 ---------> setns(paths), clone -------> )
//!                     <---------- Stage1Pid{pid}; exits
//!  uid/gid maps, cgroup.procs (only
//!  with a user namespace or on v2)
//!  Go ---------------------------------------------------------> [v1: join cgroup via tasks "0"]
//!                                                               unshare(cgroup), mounts, /dev
//!                     <------------------------------------------ Hooks (only with prestart/createRuntime hooks)
//!  run prestart + createRuntime
//!  HooksDone --------------------------------------------------> createContainer hooks, pivot_root,
//!                                                               masks, console, rlimits, identity
//!                     <------------------------------------------ SeccompListener{fd} (only with
//!  take fd (pidfd_getfd), send it to                              SCMP_ACT_NOTIFY rules)
//!  the agent at listenerPath
//!  SeccompListenerDone ----------------------------------------->
//!                     <------------------------------------------ Ready   (or Error{msg} at any step)
//!  create: state.json, exit                                      blocks opening exec.fifo
//!  run:    Start ----------------------------------------------> startContainer hooks, execve
//! ```
//! `start` opens exec.fifo for reading; init's blocked open returns and it execs. Any message
//! that does not arrive (init died) shows as EOF on the socket, and the parent reports the
//! last `Error` or "container init exited during set-up".

use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// stage1 → parent: the pid of init in the parent's pid namespace.
    Stage1Pid(i32),
    /// parent → init: maps written, cgroup joined; go on.
    Go,
    /// init → parent: rootfs is mounted; run prestart and createRuntime hooks now.
    Hooks,
    /// parent → init: hooks done.
    HooksDone,
    /// init → parent: the seccomp notification listener is descriptor N in init; take it
    /// and pass it to the seccomp agent. Also sent by an `exec` process.
    SeccompListener(i32),
    /// parent → init: the agent has the listener.
    SeccompListenerDone,
    /// init → parent: set-up is complete; init now waits to be started.
    Ready,
    /// parent → init (`run` only): start now, no exec.fifo involved.
    Start,
    /// init → parent: set-up failed.
    Error(String),
}

/// One end of the socketpair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// A second handle on the same end (close-on-exec).
    pub fn clone_of(other: &Channel) -> Channel {
        Channel {
            fd: other.fd.try_clone().expect("dup of a socket descriptor"),
        }
    }

    pub fn send(&self, msg: &Message) -> io::Result<()> {
        let buf = serde_json::to_vec(msg).map_err(io::Error::other)?;
        nix::sys::socket::send(
            self.fd.as_raw_fd(),
            &buf,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(io::Error::from)?;
        Ok(())
    }

    /// The next message; `Ok(None)` when the other side closed (exited or exec'd).
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match nix::sys::socket::recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return serde_json::from_slice(&buf[..n])
                        .map(Some)
                        .map_err(io::Error::other)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives `want`, or turns anything else into an error message.
    pub fn expect(&self, want: Message) -> Result<(), String> {
        match self.recv() {
            Ok(Some(m)) if m == want => Ok(()),
            Ok(Some(Message::Error(e))) => Err(e),
            Ok(Some(m)) => Err(format!("protocol error: expected {want:?}, got {m:?}")),
            Ok(None) => Err("container init exited during set-up".into()),
            Err(e) => Err(format!("reading from container init: {e}")),
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Message::Error("boom".into())).unwrap();
        a.send(&Message::Stage1Pid(42)).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Message::Error("boom".into())));
        assert_eq!(b.recv().unwrap(), Some(Message::Stage1Pid(42)));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn expect_reports_the_child_error() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Message::Error("mount failed".into())).unwrap();
        assert_eq!(b.expect(Message::Ready).unwrap_err(), "mount failed");
        drop(a);
        assert!(b.expect(Message::Ready).unwrap_err().contains("exited"));
    }
}
