//! The eBPF seam for cgroup v2 device programs: loading a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program and attaching, listing and detaching the programs of a cgroup directory.
//!
//! [`Bpf`] is the trait the cgroup code calls; [`Linux`] implements it with the `bpf(2)`
//! system call (all of its `unsafe` is in this file), [`FakeBpf`] records the calls and keeps a
//! model of one cgroup's attached programs for unit tests.

use super::linux::Linux;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// One eBPF instruction, `struct bpf_insn`: opcode, destination register in the low nibble and
/// source register in the high nibble of `regs`, signed offset, signed immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl BpfInsn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        BpfInsn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }
    pub const fn dst(&self) -> u8 {
        self.regs & 0x0f
    }
    pub const fn src(&self) -> u8 {
        self.regs >> 4
    }
}

/// `attach_flags` of BPF_PROG_ATTACH (include/uapi/linux/bpf.h).
pub const BPF_F_ALLOW_OVERRIDE: u32 = 1 << 0;
pub const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
pub const BPF_F_REPLACE: u32 = 1 << 2;

/// The programs attached directly to a cgroup for BPF_CGROUP_DEVICE, in the order they run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached {
    /// The flags they were attached with (0, BPF_F_ALLOW_OVERRIDE or BPF_F_ALLOW_MULTI).
    pub flags: u32,
    pub ids: Vec<u32>,
}

/// A refused BPF_PROG_LOAD, with the verifier's log when the kernel wrote one.
#[derive(Debug)]
pub struct LoadError {
    pub source: io::Error,
    pub log: String,
}

pub trait Bpf {
    /// BPF_PROG_LOAD of a BPF_PROG_TYPE_CGROUP_DEVICE program named `name` (at most 15 bytes).
    fn load_cgroup_device(&self, insns: &[BpfInsn], name: &str) -> Result<OwnedFd, LoadError>;
    /// BPF_PROG_QUERY: the device programs attached to the cgroup itself (not its ancestors').
    fn query_cgroup_device(&self, cgroup: BorrowedFd<'_>) -> io::Result<Attached>;
    /// BPF_PROG_GET_FD_BY_ID.
    fn prog_fd_by_id(&self, id: u32) -> io::Result<OwnedFd>;
    /// BPF_PROG_ATTACH with attach type BPF_CGROUP_DEVICE; `replace` goes with BPF_F_REPLACE.
    fn attach_cgroup_device(
        &self,
        cgroup: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
        flags: u32,
        replace: Option<BorrowedFd<'_>>,
    ) -> io::Result<()>;
    /// BPF_PROG_DETACH of one program.
    fn detach_cgroup_device(&self, cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()>;
}

// enum bpf_cmd, enum bpf_prog_type, enum bpf_attach_type values.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_OBJ_NAME_LEN: usize = 16;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD (up to prog_name, which every
/// kernel with cgroup device programs knows).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
}

/// BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// BPF_PROG_QUERY up to prog_cnt; `pad` keeps the tail padding zeroed for the kernel.
#[repr(C)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

/// BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// Every pointer stored in `attr` must point to memory that stays valid, with the size the
/// attribute says, for reads (and writes, for output buffers) during the call.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<T>() as libc::c_uint;
    // SAFETY: `attr` is an exclusively borrowed, initialised #[repr(C)] prefix of union
    // bpf_attr of `size` bytes; the caller vouches for the pointers inside it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A descriptor the kernel just returned from `bpf`.
fn owned(ret: libc::c_long) -> OwnedFd {
    // SAFETY: BPF_PROG_LOAD and BPF_PROG_GET_FD_BY_ID return a new descriptor that nothing
    // else owns.
    unsafe { OwnedFd::from_raw_fd(ret as RawFd) }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // Descriptors are never negative.
    fd.as_raw_fd() as u32
}

/// How large a verifier log the second, logged load attempt gets.
const LOG_SIZE: usize = 1 << 18;

impl Linux {
    fn prog_load(
        &self,
        insns: &[BpfInsn],
        name: &str,
        log: Option<&mut [u8]>,
    ) -> io::Result<OwnedFd> {
        const LICENSE: &[u8] = b"Apache-2.0\0";
        let mut prog_name = [0u8; BPF_OBJ_NAME_LEN];
        for (d, s) in prog_name
            .iter_mut()
            .zip(name.bytes().take(BPF_OBJ_NAME_LEN - 1))
        {
            *d = s;
        }
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: u32::try_from(insns.len())
                .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            kern_version: 0,
            prog_flags: 0,
            prog_name,
        };
        // The verifier may ask to be retried (EAGAIN) when interrupted.
        let mut tries = 0;
        loop {
            // SAFETY: `insns` (BpfInsn is #[repr(C)] struct bpf_insn) and the NUL-terminated
            // LICENSE outlive the call and are only read; the log buffer, when given, is
            // exclusively borrowed for the call with its true length in log_size.
            match unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) } {
                Ok(fd) => return Ok(owned(fd)),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 5 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Bpf for Linux {
    fn load_cgroup_device(&self, insns: &[BpfInsn], name: &str) -> Result<OwnedFd, LoadError> {
        let first = match self.prog_load(insns, name, None) {
            Ok(fd) => return Ok(fd),
            Err(e) => e,
        };
        // Again with the verifier's log, to say why.
        let mut log = vec![0u8; LOG_SIZE];
        match self.prog_load(insns, name, Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(source) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]).trim_end().to_string();
                let source = if source.raw_os_error() == first.raw_os_error() {
                    source
                } else {
                    first
                };
                Err(LoadError { source, log })
            }
        }
    }

    fn query_cgroup_device(&self, cgroup: BorrowedFd<'_>) -> io::Result<Attached> {
        let mut ids = vec![0u32; 64];
        loop {
            let mut attr = QueryAttr {
                target_fd: fd_u32(cgroup),
                attach_type: BPF_CGROUP_DEVICE,
                query_flags: 0,
                attach_flags: 0,
                prog_ids: ids.as_mut_ptr() as u64,
                prog_cnt: ids.len() as u32,
                pad: 0,
            };
            // SAFETY: prog_ids points at `ids`, writable for prog_cnt u32 values, which lives
            // across the call.
            match unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) } {
                Ok(_) => {
                    ids.truncate(attr.prog_cnt as usize);
                    return Ok(Attached {
                        flags: attr.attach_flags,
                        ids,
                    });
                }
                // More programs than room: prog_cnt says how many there are.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && ids.len() < 1 << 16 => {
                    let want = (attr.prog_cnt as usize).max(ids.len() * 2);
                    ids = vec![0u32; want];
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn prog_fd_by_id(&self, id: u32) -> io::Result<OwnedFd> {
        let mut attr = GetFdByIdAttr {
            prog_id: id,
            next_id: 0,
            open_flags: 0,
        };
        // SAFETY: the attribute holds no pointers.
        unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.map(owned)
    }

    fn attach_cgroup_device(
        &self,
        cgroup: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
        flags: u32,
        replace: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let mut attr = AttachAttr {
            target_fd: fd_u32(cgroup),
            attach_bpf_fd: fd_u32(prog),
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: flags,
            replace_bpf_fd: replace.map_or(0, fd_u32),
        };
        // SAFETY: the attribute holds descriptors, no pointers.
        unsafe { sys_bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
    }

    fn detach_cgroup_device(&self, cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
        let mut attr = AttachAttr {
            target_fd: fd_u32(cgroup),
            attach_bpf_fd: fd_u32(prog),
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: 0,
            replace_bpf_fd: 0,
        };
        // SAFETY: the attribute holds descriptors, no pointers.
        unsafe { sys_bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
    }
}

/// One call [`FakeBpf`] saw, with programs named by the id the fake gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfCall {
    Load {
        insns: usize,
        name: String,
    },
    Query,
    FdById(u32),
    Attach {
        prog: u32,
        flags: u32,
        replace: Option<u32>,
    },
    Detach {
        prog: u32,
    },
}

/// A pretend kernel with one cgroup: loaded programs get ids 1, 2, ...; attach, replace and
/// detach change its list of attached programs the way the kernel does for BPF_F_ALLOW_MULTI
/// (and for a single program attached without it).
#[derive(Default)]
pub struct FakeBpf {
    pub calls: RefCell<Vec<BpfCall>>,
    /// The cgroup's attached programs, as BPF_PROG_QUERY reports them.
    pub attached: RefCell<Attached>,
    /// The programs loaded, by id.
    pub programs: RefCell<BTreeMap<u32, Vec<BpfInsn>>>,
    /// Which program id each descriptor the fake handed out stands for (by raw fd number).
    fds: RefCell<BTreeMap<RawFd, u32>>,
    /// Refuse BPF_PROG_LOAD with this errno and verifier log.
    refuse_load: Option<(i32, String)>,
    /// Refuse BPF_F_REPLACE with EINVAL, as kernels before 5.6 do.
    no_replace: bool,
}

impl FakeBpf {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake whose BPF_PROG_LOAD fails with `errno` and the verifier log `log`.
    pub fn refusing_load(errno: i32, log: &str) -> Self {
        FakeBpf {
            refuse_load: Some((errno, log.to_string())),
            ..Self::default()
        }
    }

    /// A fake kernel without BPF_F_REPLACE (before 5.6).
    pub fn without_replace() -> Self {
        FakeBpf {
            no_replace: true,
            ..Self::default()
        }
    }

    pub fn take(&self) -> Vec<BpfCall> {
        std::mem::take(&mut self.calls.borrow_mut())
    }

    fn rec(&self, call: BpfCall) {
        self.calls.borrow_mut().push(call);
    }

    /// A fresh descriptor standing for program `id`.
    fn fd_for(&self, id: u32) -> io::Result<OwnedFd> {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null")?);
        self.fds.borrow_mut().insert(fd.as_raw_fd(), id);
        Ok(fd)
    }

    fn id_of(&self, fd: BorrowedFd<'_>) -> io::Result<u32> {
        self.fds
            .borrow()
            .get(&fd.as_raw_fd())
            .copied()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }
}

impl Bpf for FakeBpf {
    fn load_cgroup_device(&self, insns: &[BpfInsn], name: &str) -> Result<OwnedFd, LoadError> {
        self.rec(BpfCall::Load {
            insns: insns.len(),
            name: name.to_string(),
        });
        if let Some((errno, log)) = &self.refuse_load {
            return Err(LoadError {
                source: io::Error::from_raw_os_error(*errno),
                log: log.clone(),
            });
        }
        let id = self.programs.borrow().keys().last().map_or(1, |k| k + 1);
        self.programs.borrow_mut().insert(id, insns.to_vec());
        self.fd_for(id).map_err(|source| LoadError {
            source,
            log: String::new(),
        })
    }

    fn query_cgroup_device(&self, _cgroup: BorrowedFd<'_>) -> io::Result<Attached> {
        self.rec(BpfCall::Query);
        Ok(self.attached.borrow().clone())
    }

    fn prog_fd_by_id(&self, id: u32) -> io::Result<OwnedFd> {
        self.rec(BpfCall::FdById(id));
        if !self.programs.borrow().contains_key(&id) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.fd_for(id)
    }

    fn attach_cgroup_device(
        &self,
        _cgroup: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
        flags: u32,
        replace: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let prog = self.id_of(prog)?;
        let replace = replace.map(|fd| self.id_of(fd)).transpose()?;
        self.rec(BpfCall::Attach {
            prog,
            flags,
            replace,
        });
        let mut attached = self.attached.borrow_mut();
        let mode = flags & !BPF_F_REPLACE;
        if !attached.ids.is_empty() && attached.flags != mode {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        attached.flags = mode;
        if flags & BPF_F_REPLACE != 0 {
            if self.no_replace {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            let old = replace.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            let at = attached
                .ids
                .iter()
                .position(|&id| id == old)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            attached.ids[at] = prog;
        } else if mode & BPF_F_ALLOW_MULTI == 0 {
            attached.ids = vec![prog];
        } else if attached.ids.contains(&prog) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        } else {
            attached.ids.push(prog);
        }
        Ok(())
    }

    fn detach_cgroup_device(
        &self,
        _cgroup: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let prog = self.id_of(prog)?;
        self.rec(BpfCall::Detach { prog });
        let mut attached = self.attached.borrow_mut();
        let at = attached
            .ids
            .iter()
            .position(|&id| id == prog)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        attached.ids.remove(at);
        Ok(())
    }
}
