//! Protection against CVE-2019-5736: before a command that puts a runtime process into a
//! container (create, run, exec), the runtime re-executes itself from a copy that cannot be
//! written, so a container that reaches `/proc/<pid>/exe` never gets the host binary open for
//! writing. The cheap way: a detached, read-only bind mount of the binary (open_tree +
//! mount_setattr; nothing appears in any mount table and it vanishes with its last user).
//! Where the kernel lacks that: a sealed memfd copy.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Already running from something unwritable: a memfd copy, or a read-only mount (ours, or
/// a binary installed on a read-only filesystem).
fn running_sealed() -> bool {
    let memfd = std::fs::read_link("/proc/self/exe")
        .map(|p| p.as_os_str().as_bytes().starts_with(b"/memfd:"))
        .unwrap_or(false);
    memfd
        || nix::sys::statvfs::statvfs("/proc/self/exe")
            .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A descriptor of the binary through a detached read-only bind mount of it.
fn readonly_self() -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    // SAFETY: the path is a NUL-terminated literal; open_tree returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` has the kernel's mount_attr layout and its size is passed; the empty path
    // with AT_EMPTY_PATH names the detached mount itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// A sealed memfd copy of the binary.
fn memfd_self() -> io::Result<OwnedFd> {
    let mut exe = std::fs::File::open("/proc/self/exe")?;
    // SAFETY: the name is a NUL-terminated literal; the flags are valid.
    let fd = unsafe {
        libc::memfd_create(
            c"kapsel-runtime".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from memfd_create, owned by nobody else.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut copy = std::fs::File::from(memfd);
    io::copy(&mut exe, &mut copy)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own memfd with valid seal flags.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(copy))
}

/// Re-executes the current command from an unwritable view of the binary, unless it already
/// runs from one. Returns only on failure.
pub fn reexec_sealed() -> io::Result<()> {
    if running_sealed() {
        return Ok(());
    }
    let copy = match readonly_self() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("no read-only bind of the runtime binary ({e}); using a sealed copy");
            memfd_self()?
        }
    };
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).unwrap_or_default()
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated strings that outlive
    // the call; the descriptor is our read-only view of the binary. On success this does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            copy.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(io::Error::last_os_error())
}
