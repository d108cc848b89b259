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

/// Like [`clone_fork`], with the child born in the cgroup v2 directory `cgroup` (clone3 with
/// CLONE_INTO_CGROUP, Linux 5.7): no migration afterwards, so none of the cgroup lock's RCU wait
/// that moving a process costs. Errors (ENOSYS, E2BIG on older kernels; EBUSY, EACCES from the
/// cgroup) leave no child: the caller falls back to clone and moving the pid.
pub fn clone_fork_into_cgroup(
    flags: libc::c_int,
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> io::Result<libc::pid_t> {
    use std::os::fd::AsRawFd;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    /// struct clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: as for clone_fork: no CLONE_VM and no stack, so the child continues on a private
    // copy of this single-threaded process. `args` has the kernel's clone_args layout up to the
    // cgroup field and its exact size is passed; the descriptor is borrowed for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
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
