//! The real [`Kernel`]: thin wrappers over nix and libc.

use super::{CapSets, InRoot, Kernel, Node, SchedAttr};
use nix::mount::{MntFlags, MsFlags};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

fn cvt(res: nix::Result<()>) -> io::Result<()> {
    res.map_err(|e| io::Error::from_raw_os_error(e as i32))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct RawSchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2 with `dirfd` as the root of every lookup, returning an O_PATH descriptor.
fn open_in_root(dirfd: RawFd, path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    })?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` is NUL-terminated and `how` has the kernel's open_how layout with its size
    // passed; both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Kernel for Linux {
    fn make_in_root(&self, root: &Path, path: &Path, node: Node) -> io::Result<InRoot> {
        let root_fd = OwnedFd::from(std::fs::File::open(root)?);
        let parts: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                std::path::Component::ParentDir => Some(std::ffi::OsStr::new("..")),
                _ => None,
            })
            .collect();
        let (dirs, leaf) = match node {
            Node::Parent => match parts.split_last() {
                Some((leaf, dirs)) => (dirs, Some(*leaf)),
                None => (&parts[..], None),
            },
            _ => (&parts[..], None),
        };
        let mut cur = std::path::PathBuf::new();
        let mut fd = open_in_root(root_fd.as_raw_fd(), &cur)?;
        for (i, part) in dirs.iter().enumerate() {
            cur.push(part);
            match open_in_root(root_fd.as_raw_fd(), &cur) {
                Ok(next) => fd = next,
                Err(e) if e.kind() == io::ErrorKind::NotFound && node != Node::Existing => {
                    // Create the one missing component inside its (already safely opened)
                    // parent; mkdirat and O_EXCL|O_NOFOLLOW never follow a symlink there.
                    let name = cpath(Path::new(part))?;
                    let parent = fd_path(&fd);
                    let pc = cpath(&parent)?;
                    let pdir = nix::fcntl::open(
                        pc.as_c_str(),
                        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                    let last = i + 1 == dirs.len();
                    // SAFETY: `name` is NUL-terminated; `pdir` is an open directory.
                    let rc = unsafe {
                        if last && node == Node::File {
                            let f = libc::openat(
                                pdir.as_raw_fd(),
                                name.as_ptr(),
                                libc::O_CREAT
                                    | libc::O_EXCL
                                    | libc::O_WRONLY
                                    | libc::O_NOFOLLOW
                                    | libc::O_CLOEXEC,
                                0o644,
                            );
                            if f >= 0 {
                                libc::close(f);
                            }
                            f
                        } else {
                            libc::mkdirat(pdir.as_raw_fd(), name.as_ptr(), 0o755)
                        }
                    };
                    if rc < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() != io::ErrorKind::AlreadyExists {
                            return Err(e);
                        }
                    }
                    fd = open_in_root(root_fd.as_raw_fd(), &cur)?;
                }
                Err(e) => return Err(e),
            }
        }
        let mut out = fd_path(&fd);
        if let Some(leaf) = leaf {
            out.push(leaf);
        }
        Ok(InRoot {
            path: out,
            fd: Some(fd),
        })
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        cvt(nix::mount::mount(source, target, fstype, flags, data))
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        cvt(nix::mount::umount2(target, flags))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        cvt(nix::unistd::pivot_root(new_root, put_old))
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn fchdir(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: fchdir only reads the descriptor number; a bad one fails with EBADF.
        check(unsafe { libc::fchdir(fd) } as libc::c_long)
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        cvt(nix::unistd::chroot(path))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn touch(&self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent, 0o755)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn mknod(&self, path: &Path, kind: u32, perm: u32, dev: u64) -> io::Result<()> {
        let p = cpath(path)?;
        // SAFETY: `p` is a valid NUL-terminated path; mknod does not retain it.
        check(unsafe { libc::mknod(p.as_ptr(), kind | perm, dev) } as libc::c_long)
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        std::os::unix::fs::chown(path, uid, gid)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(data)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        cvt(nix::unistd::sethostname(name))
    }

    fn setdomainname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
        check(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } as libc::c_long)
    }

    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: unshare takes only flags.
        check(unsafe { libc::unshare(flags) } as libc::c_long)
    }

    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
        // SAFETY: setns only reads the descriptor number; an invalid one fails with EBADF.
        check(unsafe { libc::setns(fd, nstype) } as libc::c_long)
    }

    fn setsid(&self) -> io::Result<()> {
        nix::unistd::setsid()
            .map(|_| ())
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
    }

    fn setrlimit(&self, resource: libc::c_int, soft: u64, hard: u64) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit that outlives the call; a bad resource is EINVAL.
        check(unsafe { libc::setrlimit(resource as _, &lim) } as libc::c_long)
    }

    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        // SAFETY: the pointer and count describe `gids`, which outlives the call.
        check(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) } as libc::c_long)
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        // Raw syscall: glibc's wrapper would broadcast to other threads, and we have none.
        // SAFETY: plain integer arguments.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        // SAFETY: plain integer arguments.
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
    }

    fn umask(&self, mask: u32) {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask) };
    }

    fn set_keep_caps(&self, keep: bool) -> io::Result<()> {
        cvt(nix::sys::prctl::set_keepcaps(keep))
    }

    fn drop_bounding(&self, cap: u32) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) }
                as libc::c_long,
        )
    }

    fn in_bounding(&self, cap: u32) -> bool {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1 }
    }

    fn capset(&self, sets: CapSets) -> io::Result<()> {
        let mut hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let lo = |m: u64| m as u32;
        let hi = |m: u64| (m >> 32) as u32;
        let data = [
            CapData {
                effective: lo(sets.effective),
                permitted: lo(sets.permitted),
                inheritable: lo(sets.inheritable),
            },
            CapData {
                effective: hi(sets.effective),
                permitted: hi(sets.permitted),
                inheritable: hi(sets.inheritable),
            },
        ];
        // SAFETY: header and the two-element data array have the kernel's v3 layout and
        // outlive the call.
        check(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) })
    }

    fn clear_ambient(&self) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        } as libc::c_long)
    }

    fn raise_ambient(&self, cap: u32) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        } as libc::c_long)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        cvt(nix::sys::prctl::set_no_new_privs())
    }

    fn personality(&self, persona: libc::c_ulong) -> io::Result<()> {
        // SAFETY: personality takes an integer.
        check(unsafe { libc::personality(persona) } as libc::c_long)
    }

    fn set_io_priority(&self, class: i32, level: i32) -> io::Result<()> {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        let prio = ((class as libc::c_long) << 13) | level as libc::c_long;
        // SAFETY: integer arguments only.
        check(unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) })
    }

    fn sched_setattr(&self, attr: &SchedAttr) -> io::Result<()> {
        let raw = RawSchedAttr {
            size: std::mem::size_of::<RawSchedAttr>() as u32,
            sched_policy: attr.policy,
            sched_flags: attr.flags,
            sched_nice: attr.nice,
            sched_priority: attr.priority,
            sched_runtime: attr.runtime,
            sched_deadline: attr.deadline,
            sched_period: attr.period,
        };
        // SAFETY: `raw` has the kernel's sched_attr layout with its size set, and outlives the call.
        check(unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw as *const RawSchedAttr, 0) })
    }

    fn open_pty(&self) -> io::Result<(OwnedFd, String)> {
        // SAFETY: the path is a NUL-terminated literal.
        let fd = unsafe {
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `master` is an open ptmx descriptor.
        if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is writable for its length; ptsname_r writes a NUL-terminated name.
        let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok((master, String::from_utf8_lossy(&buf[..end]).into_owned()))
    }

    fn join_session_keyring(&self, name: &str) -> io::Result<()> {
        const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
        let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `name` is NUL-terminated and outlives the call.
        check(unsafe {
            libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr())
        })
    }

    fn seccomp_filter(
        &self,
        program: &[crate::seccomp::SockFilter],
        flags: u32,
    ) -> io::Result<Option<OwnedFd>> {
        const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
        let len =
            u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let prog = libc::sock_fprog {
            len,
            // The kernel only reads the program.
            filter: program.as_ptr().cast_mut().cast::<libc::sock_filter>(),
        };
        // SAFETY: SockFilter is #[repr(C)] with the layout of struct sock_filter; `prog` points
        // at `program`, which outlives the call, and the kernel copies it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                libc::c_ulong::from(flags),
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & crate::seccomp::FLAG_NEW_LISTENER == 0 {
            return Ok(None);
        }
        // SAFETY: with NEW_LISTENER the return value is a new descriptor that only we own.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }))
    }

    fn execve(&self, path: &CString, args: &[CString], env: &[CString]) -> io::Error {
        match nix::unistd::execve(path, args, env) {
            Ok(never) => match never {},
            Err(e) => io::Error::from_raw_os_error(e as i32),
        }
    }
}
