//! Process plumbing shared by create, run and exec: the parent/init protocol and fork helpers.

pub mod message;
pub mod relay;

use std::io;

/// Forks with `clone(2)` and the given namespace flags, fork-style (no new stack: the child
/// continues from here on a copy of the address space). Returns 0 in the child.
///
/// The runtime is single-threaded, so the child may go on running ordinary Rust code.
pub fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: clone without CLONE_VM or a new stack behaves as fork(): the child gets a private
    // copy of the address space. The runtime never starts threads, so no lock can be held by a
    // thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// Ends a forked child without running destructors or atexit handlers of the parent's state.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Waits for `pid` and returns its exit code (128+signal when killed).
pub fn wait_exit(pid: libc::pid_t) -> io::Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
