//! A recording [`Kernel`] for unit tests: every call becomes a [`Call`]; failures can be injected.

use super::{CapSets, InRoot, Kernel, Node, SchedAttr};
use nix::mount::{MntFlags, MsFlags};
use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount(PathBuf),
    PivotRoot(PathBuf),
    Chdir(PathBuf),
    Fchdir,
    Chroot(PathBuf),
    MkdirAll(PathBuf),
    Touch(PathBuf),
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    Mknod {
        path: PathBuf,
        kind: u32,
        dev: u64,
    },
    Chown(PathBuf),
    RemoveFile(PathBuf),
    WriteFile {
        path: PathBuf,
        data: Vec<u8>,
    },
    Sethostname(String),
    Setdomainname(String),
    Unshare(libc::c_int),
    Setns(libc::c_int),
    Setsid,
    Setrlimit {
        resource: libc::c_int,
        soft: u64,
        hard: u64,
    },
    Setgroups(Vec<u32>),
    Setresgid(u32),
    Setresuid(u32),
    Umask(u32),
    KeepCaps(bool),
    DropBounding(u32),
    Capset(CapSets),
    ClearAmbient,
    RaiseAmbient(u32),
    NoNewPrivs,
    Personality(libc::c_ulong),
    IoPriority(i32, i32),
    SchedSetattr(SchedAttr),
    OpenPty,
    JoinKeyring(String),
    /// A seccomp filter: its length in instructions and its flags.
    SeccompFilter {
        len: usize,
        flags: u32,
    },
    Execve(Vec<String>),
}

/// A predicate over calls and the errno to fail the first matching call with.
type Failure = (Box<dyn Fn(&Call) -> bool>, i32);

/// Records calls; `fail_on` makes the first call matching a predicate fail with an errno.
#[derive(Default)]
pub struct Recorder {
    pub calls: RefCell<Vec<Call>>,
    /// Capabilities missing from the (pretend) bounding set.
    pub not_in_bounding: Vec<u32>,
    fail: RefCell<Option<Failure>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail_on(&self, pred: impl Fn(&Call) -> bool + 'static, errno: i32) {
        *self.fail.borrow_mut() = Some((Box::new(pred), errno));
    }

    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.borrow_mut())
    }

    fn rec(&self, call: Call) -> io::Result<()> {
        let failing = {
            let fail = self.fail.borrow();
            match fail.as_ref() {
                Some((pred, errno)) if pred(&call) => Some(*errno),
                _ => None,
            }
        };
        self.calls.borrow_mut().push(call);
        match failing {
            Some(errno) => {
                self.fail.borrow_mut().take();
                Err(io::Error::from_raw_os_error(errno))
            }
            None => Ok(()),
        }
    }
}

impl Kernel for Recorder {
    fn make_in_root(&self, root: &Path, path: &Path, node: Node) -> io::Result<InRoot> {
        let resolved = crate::init::mounts::resolve_in_root(root, path)?;
        match node {
            Node::Dir => self.rec(Call::MkdirAll(resolved.clone()))?,
            Node::File => self.rec(Call::Touch(resolved.clone()))?,
            Node::Parent => {
                if let Some(p) = resolved.parent() {
                    self.rec(Call::MkdirAll(p.to_path_buf()))?;
                }
            }
            Node::Existing => {}
        }
        Ok(InRoot {
            path: resolved,
            fd: None,
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
        self.rec(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }
    fn umount(&self, target: &Path, _flags: MntFlags) -> io::Result<()> {
        self.rec(Call::Umount(target.to_path_buf()))
    }
    fn pivot_root(&self, new_root: &Path, _put_old: &Path) -> io::Result<()> {
        self.rec(Call::PivotRoot(new_root.to_path_buf()))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.rec(Call::Chdir(path.to_path_buf()))
    }
    fn fchdir(&self, _fd: RawFd) -> io::Result<()> {
        self.rec(Call::Fchdir)
    }
    fn chroot(&self, path: &Path) -> io::Result<()> {
        self.rec(Call::Chroot(path.to_path_buf()))
    }
    fn mkdir_all(&self, path: &Path, _mode: u32) -> io::Result<()> {
        self.rec(Call::MkdirAll(path.to_path_buf()))
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        self.rec(Call::Touch(path.to_path_buf()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.rec(Call::Symlink {
            target: target.to_path_buf(),
            link: link.to_path_buf(),
        })
    }
    fn mknod(&self, path: &Path, kind: u32, _perm: u32, dev: u64) -> io::Result<()> {
        self.rec(Call::Mknod {
            path: path.to_path_buf(),
            kind,
            dev,
        })
    }
    fn chown(&self, path: &Path, _uid: Option<u32>, _gid: Option<u32>) -> io::Result<()> {
        self.rec(Call::Chown(path.to_path_buf()))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.rec(Call::RemoveFile(path.to_path_buf()))
    }
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.rec(Call::WriteFile {
            path: path.to_path_buf(),
            data: data.to_vec(),
        })
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.rec(Call::Sethostname(name.to_string()))
    }
    fn setdomainname(&self, name: &str) -> io::Result<()> {
        self.rec(Call::Setdomainname(name.to_string()))
    }
    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        self.rec(Call::Unshare(flags))
    }
    fn setns(&self, _fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
        self.rec(Call::Setns(nstype))
    }
    fn setsid(&self) -> io::Result<()> {
        self.rec(Call::Setsid)
    }
    fn setrlimit(&self, resource: libc::c_int, soft: u64, hard: u64) -> io::Result<()> {
        self.rec(Call::Setrlimit {
            resource,
            soft,
            hard,
        })
    }
    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        self.rec(Call::Setgroups(gids.to_vec()))
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        self.rec(Call::Setresgid(gid))
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        self.rec(Call::Setresuid(uid))
    }
    fn umask(&self, mask: u32) {
        let _ = self.rec(Call::Umask(mask));
    }
    fn set_keep_caps(&self, keep: bool) -> io::Result<()> {
        self.rec(Call::KeepCaps(keep))
    }
    fn drop_bounding(&self, cap: u32) -> io::Result<()> {
        self.rec(Call::DropBounding(cap))
    }
    fn in_bounding(&self, cap: u32) -> bool {
        !self.not_in_bounding.contains(&cap)
    }
    fn capset(&self, sets: CapSets) -> io::Result<()> {
        self.rec(Call::Capset(sets))
    }
    fn clear_ambient(&self) -> io::Result<()> {
        self.rec(Call::ClearAmbient)
    }
    fn raise_ambient(&self, cap: u32) -> io::Result<()> {
        self.rec(Call::RaiseAmbient(cap))
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.rec(Call::NoNewPrivs)
    }
    fn personality(&self, persona: libc::c_ulong) -> io::Result<()> {
        self.rec(Call::Personality(persona))
    }
    fn set_io_priority(&self, class: i32, level: i32) -> io::Result<()> {
        self.rec(Call::IoPriority(class, level))
    }
    fn sched_setattr(&self, attr: &SchedAttr) -> io::Result<()> {
        self.rec(Call::SchedSetattr(*attr))
    }
    fn open_pty(&self) -> io::Result<(OwnedFd, String)> {
        self.rec(Call::OpenPty)?;
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
    fn join_session_keyring(&self, name: &str) -> io::Result<()> {
        self.rec(Call::JoinKeyring(name.to_string()))
    }
    fn seccomp_filter(
        &self,
        program: &[crate::seccomp::SockFilter],
        flags: u32,
    ) -> io::Result<Option<OwnedFd>> {
        self.rec(Call::SeccompFilter {
            len: program.len(),
            flags,
        })?;
        if flags & crate::seccomp::FLAG_NEW_LISTENER == 0 {
            return Ok(None);
        }
        // Any descriptor serves as the pretend listener.
        Ok(Some(OwnedFd::from(std::fs::File::open("/dev/null")?)))
    }
    fn execve(&self, path: &CString, args: &[CString], _env: &[CString]) -> io::Error {
        let mut v = vec![path.to_string_lossy().into_owned()];
        v.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
        let _ = self.rec(Call::Execve(v));
        io::Error::from_raw_os_error(libc::ENOSYS)
    }
}
