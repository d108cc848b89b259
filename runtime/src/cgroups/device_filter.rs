//! cgroup v2 device rules: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE compiled from the
//! rule list, and its installation on the container's cgroup directory.
//!
//! Semantics, per access bit: for each access the request asks for (mknod, read, write), the
//! last rule that matches the device (type, major, minor; `a` and absent numbers are wildcards)
//! and names that access decides; a request is allowed when every access it asks for is, and
//! denied when no rule decides. For the rule lists the v1 kernel accepts without runc refusing
//! them this is what devices.allow/deny enforce; where runc would refuse a hole punched into a
//! wildcard allowance (deny `c 1:3 w` after allow `c *:* rwm`) the hole is simply enforced.
//!
//! The kernel calls the program with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }`, where access_type holds the device type (1 block, 2 char) in its low 16 bits and
//! the access (1 mknod, 2 read, 4 write) in its high 16 bits; it returns 1 to allow, 0 to deny.
//! The program walks the rules from last to first, keeping the accesses still undecided in r2:
//!
//! ```text
//!   r2 = ctx->access_type; r3 = r2 & 0xffff (type); r2 >>= 16 (access)
//!   r4 = ctx->major; r5 = ctx->minor
//!   if r2 == 0: return 0
//!   for each rule, last first:
//!     if the type, major or minor differ, or r2 & rule.access == 0: next rule
//!     deny:  return 0
//!     allow: r2 &= ~rule.access; if r2 == 0: return 1
//!   return 0
//! ```

use super::devices::Rule;
use super::CgroupError;
use crate::syscall::bpf::{Bpf, BpfInsn, BPF_F_ALLOW_MULTI, BPF_F_REPLACE};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The name the kernel shows for our programs (bpftool, /proc/kallsyms): 15 bytes at most.
pub(super) const PROG_NAME: &str = "kapsel_devices";

// The instructions the program uses (include/uapi/linux/bpf.h, bpf_common.h).
const LDX_W_MEM: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU64_MOV_X: u8 = 0xbf; // dst = src
const ALU64_MOV_K: u8 = 0xb7; // dst = imm (sign-extended)
const ALU_MOV_K: u8 = 0xb4; // dst = (u32)imm (zero-extended)
const ALU64_AND_K: u8 = 0x57; // dst &= imm (sign-extended)
const ALU64_RSH_K: u8 = 0x77; // dst >>= imm
const JMP_JEQ_K: u8 = 0x15; // if dst == imm: pc += off
const JMP_JNE_K: u8 = 0x55; // if dst != imm: pc += off
const JMP_JNE_X: u8 = 0x5d; // if dst != src: pc += off
const JMP_EXIT: u8 = 0x95; // return r0

// Registers.
const R0: u8 = 0;
const R1: u8 = 1; // the context
const R2: u8 = 2; // accesses still undecided
const R3: u8 = 3; // device type
const R4: u8 = 4; // major
const R5: u8 = 5; // minor

// bpf_cgroup_dev_ctx values.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// A rule in the program's terms; `None` matches anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Match {
    allow: bool,
    typ: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
}

impl Match {
    /// `None` for a rule that can match no device (a number beyond 32 bits, no access).
    fn from_rule(rule: &Rule) -> Option<Match> {
        let typ = match rule.typ {
            'b' => Some(DEV_BLOCK),
            'c' => Some(DEV_CHAR),
            _ => None,
        };
        let number = |n: Option<i64>| match n {
            None => Some(None),
            Some(n) => u32::try_from(n).ok().map(Some),
        };
        let access = rule.access.chars().fold(0, |acc, c| {
            acc | match c {
                'm' => ACC_MKNOD,
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                _ => 0,
            }
        });
        if access == 0 {
            return None;
        }
        Some(Match {
            allow: rule.allow,
            typ,
            major: number(rule.major)?,
            minor: number(rule.minor)?,
            access,
        })
    }
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn::new(code, dst, src, off, imm)
}

/// The "next rule" jump, its offset patched once the block's length is known.
const NEXT: i16 = i16::MIN;

/// Compares `reg` with `value`, jumping to the next rule when they differ.
fn jump_unless_equal(block: &mut Vec<BpfInsn>, reg: u8, value: u32) {
    match i32::try_from(value) {
        Ok(imm) => block.push(insn(JMP_JNE_K, reg, 0, NEXT, imm)),
        // A 64-bit compare with an immediate would sign-extend it: load it zero-extended.
        Err(_) => {
            block.push(insn(ALU_MOV_K, R0, 0, 0, value as i32));
            block.push(insn(JMP_JNE_X, reg, R0, NEXT, 0));
        }
    }
}

/// The program for `rules`, in order (see the module comment).
pub(super) fn program(rules: &[Rule]) -> Vec<BpfInsn> {
    let mut prog = vec![
        insn(LDX_W_MEM, R2, R1, 0, 0),
        insn(ALU64_MOV_X, R3, R2, 0, 0),
        insn(ALU64_AND_K, R3, 0, 0, 0xffff),
        insn(ALU64_RSH_K, R2, 0, 0, 16),
        insn(LDX_W_MEM, R4, R1, 4, 0),
        insn(LDX_W_MEM, R5, R1, 8, 0),
        // A request for no access at all is refused.
        insn(JMP_JNE_K, R2, 0, 2, 0),
        insn(ALU64_MOV_K, R0, 0, 0, 0),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ];
    for m in rules.iter().rev().filter_map(Match::from_rule) {
        let mut block = Vec::new();
        if let Some(typ) = m.typ {
            jump_unless_equal(&mut block, R3, typ);
        }
        if let Some(major) = m.major {
            jump_unless_equal(&mut block, R4, major);
        }
        if let Some(minor) = m.minor {
            jump_unless_equal(&mut block, R5, minor);
        }
        if m.access != ACC_ALL {
            block.push(insn(ALU64_MOV_X, R0, R2, 0, 0));
            block.push(insn(ALU64_AND_K, R0, 0, 0, m.access as i32));
            block.push(insn(JMP_JEQ_K, R0, 0, NEXT, 0));
        }
        let unconditional = block.is_empty();
        if m.allow {
            block.push(insn(ALU64_AND_K, R2, 0, 0, !m.access as i32));
            block.push(insn(JMP_JNE_K, R2, 0, NEXT, 0));
            block.push(insn(ALU64_MOV_K, R0, 0, 0, 1));
        } else {
            block.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
        }
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (at, i) in block.iter_mut().enumerate() {
            if i.off == NEXT {
                // Blocks are a few instructions long.
                i.off = (len - at - 1) as i16;
            }
        }
        prog.extend(block);
        // Nothing before an unconditional deny can decide anything; the verifier refuses
        // unreachable instructions, so the program ends here.
        if unconditional && !m.allow {
            return prog;
        }
    }
    prog.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// Whether this process is root in the initial user namespace, the only place the kernel lets
/// load and attach cgroup device programs.
fn privileged() -> bool {
    // The initial user namespace's inode number is fixed (PROC_USER_INIT_INO).
    const INIT_USER_NS: &str = "user:[4026531837]";
    let init_ns = std::fs::read_link("/proc/self/ns/user")
        .is_ok_and(|l| l.as_os_str() == std::ffi::OsStr::new(INIT_USER_NS));
    nix::unistd::geteuid().is_root() && init_ns
}

/// Loads the program for `rules` and makes it the only device program attached to the cgroup
/// `dir`: it replaces an attached one atomically where the kernel can (BPF_F_REPLACE, 5.6+), or
/// is attached before the old ones are detached, so the container never runs without a filter.
/// Unprivileged (rootless), where the kernel refuses the program, the rules are not enforced
/// and a warning says so, as runc does.
pub(super) fn install(bpf: &dyn Bpf, dir: &Path, rules: &[Rule]) -> Result<(), CgroupError> {
    let insns = program(rules);
    let prog = match bpf.load_cgroup_device(&insns, PROG_NAME) {
        Ok(fd) => fd,
        Err(e) if e.source.raw_os_error() == Some(libc::EPERM) && !privileged() => {
            tracing::warn!(
                "linux.resources.devices is not enforced: this (rootless) runtime may not load \
                 the cgroup v2 eBPF device program ({}); the container can use the device nodes \
                 it was given",
                e.source
            );
            return Ok(());
        }
        Err(e) => {
            let hint = if e.source.raw_os_error() == Some(libc::EPERM) {
                " (loading needs CAP_SYS_ADMIN or CAP_BPF, and before Linux 5.11 enough RLIMIT_MEMLOCK)"
            } else {
                ""
            };
            let log = if e.log.is_empty() {
                "none".to_string()
            } else {
                e.log
            };
            return Err(CgroupError::DeviceProgramLoad {
                path: dir.to_path_buf(),
                insns: insns.len(),
                source: e.source,
                hint,
                log,
            });
        }
    };
    let error = |op: &'static str| {
        move |source| CgroupError::DeviceProgram {
            op,
            path: dir.to_path_buf(),
            source,
        }
    };
    let cgroup = std::fs::File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let cgroup = cgroup.as_fd();
    let old = bpf
        .query_cgroup_device(cgroup)
        .map_err(error("BPF_PROG_QUERY"))?;
    let mut old_progs: Vec<OwnedFd> = Vec::new();
    for &id in &old.ids {
        match bpf.prog_fd_by_id(id) {
            Ok(fd) => old_progs.push(fd),
            // Detached and freed since the query.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(error("BPF_PROG_GET_FD_BY_ID")(e)),
        }
    }
    if !old_progs.is_empty() && old.flags & BPF_F_ALLOW_MULTI == 0 {
        // A single program attached without BPF_F_ALLOW_MULTI: attaching with its flags
        // replaces it (other flags would be refused).
        return bpf
            .attach_cgroup_device(cgroup, prog.as_fd(), old.flags, None)
            .map_err(error("BPF_PROG_ATTACH"));
    }
    let mut rest = old_progs.as_slice();
    match old_progs.split_first() {
        Some((first, others)) => {
            let flags = BPF_F_ALLOW_MULTI | BPF_F_REPLACE;
            match bpf.attach_cgroup_device(cgroup, prog.as_fd(), flags, Some(first.as_fd())) {
                Ok(()) => rest = others,
                // Before 5.6 there is no BPF_F_REPLACE: add, then detach every old one.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => bpf
                    .attach_cgroup_device(cgroup, prog.as_fd(), BPF_F_ALLOW_MULTI, None)
                    .map_err(error("BPF_PROG_ATTACH"))?,
                Err(e) => return Err(error("BPF_PROG_ATTACH with BPF_F_REPLACE")(e)),
            }
        }
        None => bpf
            .attach_cgroup_device(cgroup, prog.as_fd(), BPF_F_ALLOW_MULTI, None)
            .map_err(error("BPF_PROG_ATTACH"))?,
    }
    for old in rest {
        match bpf.detach_cgroup_device(cgroup, old.as_fd()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(error("BPF_PROG_DETACH of the old program")(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
