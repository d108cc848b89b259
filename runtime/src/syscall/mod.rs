//! The kernel seam: every system call that container set-up makes goes through [`Kernel`].
//!
//! The runtime passes a `&dyn Kernel` explicitly into each set-up phase. [`linux::Linux`] is the
//! real thing; [`fake::Recorder`] records each call as a [`fake::Call`] so unit tests can assert
//! the exact order of mounts, identity changes and capability drops, and can inject failures.
//! All `unsafe` of the set-up lives in `linux.rs`.

use nix::mount::{MntFlags, MsFlags};
use std::ffi::CString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

pub mod bpf;
pub mod fake;
pub mod linux;

/// What [`Kernel::make_in_root`] should find or create at the end of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    /// Only the parent directories; the returned path names the last component in them.
    Parent,
    /// Nothing is created: reopen what is there now (e.g. the root of a mount just made).
    Existing,
}

/// A path inside a rootfs, safe to hand to path-based system calls: it goes through an open
/// descriptor (`/proc/self/fd/N`) resolved with the rootfs as its root, so a symlink swapped in
/// by the container cannot redirect it to the host. Valid while this value lives.
#[derive(Debug)]
pub struct InRoot {
    pub path: std::path::PathBuf,
    pub fd: Option<OwnedFd>,
}

/// The five capability sets as bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

pub trait Kernel {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// Finds `path` inside `root` (symlinks and `..` never leave `root`), creating missing
    /// directories (and the file, for [`Node::File`]) one component at a time without
    /// following symlinks out of the root.
    fn make_in_root(&self, root: &Path, path: &Path, node: Node) -> io::Result<InRoot>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    fn fchdir(&self, fd: RawFd) -> io::Result<()>;
    fn chroot(&self, path: &Path) -> io::Result<()>;
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty regular file (and its parents) if nothing exists at `path`.
    fn touch(&self, path: &Path) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn mknod(&self, path: &Path, kind: u32, perm: u32, dev: u64) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    fn setdomainname(&self, name: &str) -> io::Result<()>;
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> io::Result<()>;
    fn setsid(&self) -> io::Result<()>;
    fn setrlimit(&self, resource: libc::c_int, soft: u64, hard: u64) -> io::Result<()>;
    fn setgroups(&self, gids: &[u32]) -> io::Result<()>;
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    fn umask(&self, mask: u32);
    fn set_keep_caps(&self, keep: bool) -> io::Result<()>;
    /// Drops capability `cap` from the bounding set.
    fn drop_bounding(&self, cap: u32) -> io::Result<()>;
    /// Whether `cap` is in this process's bounding set.
    fn in_bounding(&self, cap: u32) -> bool;
    fn capset(&self, sets: CapSets) -> io::Result<()>;
    fn clear_ambient(&self) -> io::Result<()>;
    fn raise_ambient(&self, cap: u32) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    fn personality(&self, persona: libc::c_ulong) -> io::Result<()>;
    fn set_io_priority(&self, class: i32, level: i32) -> io::Result<()>;
    fn sched_setattr(&self, attr: &SchedAttr) -> io::Result<()>;
    /// Opens `/dev/ptmx` (inside the current root) and returns the master and the slave's path.
    fn open_pty(&self) -> io::Result<(OwnedFd, String)>;
    /// Joins a new session keyring (`KEYCTL_JOIN_SESSION_KEYRING`).
    fn join_session_keyring(&self, name: &str) -> io::Result<()>;
    /// Loads a seccomp filter (`seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`); returns the
    /// notification listener when `flags` has SECCOMP_FILTER_FLAG_NEW_LISTENER.
    fn seccomp_filter(
        &self,
        program: &[crate::seccomp::SockFilter],
        flags: u32,
    ) -> io::Result<Option<OwnedFd>>;
    fn execve(&self, path: &CString, args: &[CString], env: &[CString]) -> io::Error;
}

/// `struct sched_attr` of `sched_setattr(2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedAttr {
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}
