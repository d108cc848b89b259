//! What the fuzz targets check beyond "does not panic": a compiled seccomp program is one the
//! kernel would load, and it answers every probe syscall the way the profile says.
//!
//! - [`check_program`] repeats the kernel's checks of a classic BPF seccomp filter
//!   (`bpf_check_classic` and `seccomp_check_filter`), restricted to what the compiler emits:
//!   length 1..=4096, known opcodes, loads inside `struct seccomp_data`, jumps that land inside
//!   the program, a `ret` at the end.
//! - [`run`] interprets the program on one `seccomp_data`.
//! - [`Model`] is the profile's meaning written directly from the rules documented in
//!   `kapsel_runtime::seccomp` (runc + libseccomp semantics), with no BPF in between;
//!   [`probes`] picks the syscalls and argument values worth asking both about.

use kapsel_runtime::seccomp::{Arch, Filter, SockFilter, FLAG_NEW_LISTENER, FLAG_TSYNC};
use kapsel_runtime::spec::{Seccomp, SeccompAction, SeccompArg, SeccompOperator, SeccompSyscall};
use std::collections::HashMap;

/// The kernel's `BPF_MAXINSNS`.
pub const MAX_INSNS: usize = 4096;
/// `sizeof(struct seccomp_data)`.
const DATA_LEN: u32 = 64;

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_BIT: u32 = 0x4000_0000;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const ACTION_FULL: u32 = 0xffff_0000;
const ENOSYS: u32 = 38;
const EPERM: u32 = 1;

/// Why a program would be refused by the kernel or could not run.
pub fn check_program(prog: &[SockFilter]) -> Result<(), String> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err(format!("length {} is outside 1..={MAX_INSNS}", prog.len()));
    }
    let len = prog.len();
    let lands = |from: usize, skip: u64| (from as u64) + 1 + skip < len as u64;
    for (i, insn) in prog.iter().enumerate() {
        match insn.code {
            LD_W_ABS => {
                if insn.k >= DATA_LEN || !insn.k.is_multiple_of(4) {
                    return Err(format!(
                        "insn {i}: load at offset {} of seccomp_data",
                        insn.k
                    ));
                }
            }
            ALU_AND_K | RET_K => {}
            JMP_JA => {
                if !lands(i, u64::from(insn.k)) {
                    return Err(format!(
                        "insn {i}: ja +{} leaves the program ({len})",
                        insn.k
                    ));
                }
            }
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
                if !lands(i, u64::from(insn.jt)) || !lands(i, u64::from(insn.jf)) {
                    return Err(format!(
                        "insn {i}: jump +{}/+{} leaves the program ({len})",
                        insn.jt, insn.jf
                    ));
                }
            }
            code => return Err(format!("insn {i}: unexpected opcode {code:#x}")),
        }
        if insn.code == RET_K && !known_action(insn.k) {
            return Err(format!("insn {i}: ret {:#x} is no seccomp action", insn.k));
        }
    }
    if prog[len - 1].code != RET_K {
        return Err("the last instruction is not a ret".into());
    }
    Ok(())
}

fn known_action(k: u32) -> bool {
    matches!(
        k & ACTION_FULL,
        RET_KILL_PROCESS | RET_KILL_THREAD | RET_TRAP | RET_ERRNO | RET_USER_NOTIF | RET_TRACE
    ) || matches!(k, RET_LOG | RET_ALLOW)
}

/// One `struct seccomp_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Data {
    fn word(&self, off: u32) -> u32 {
        match off {
            0 => self.nr,
            4 => self.arch,
            // The instruction pointer: not something the compiler reads.
            8 | 12 => 0,
            _ => {
                let a = self.args[((off - 16) / 8) as usize];
                if off.is_multiple_of(8) {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
        }
    }
}

/// Runs a program that passed [`check_program`] on `d`: its return value.
pub fn run(prog: &[SockFilter], d: &Data) -> u32 {
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let insn = prog[pc];
        let cond = |taken: bool| pc + 1 + usize::from(if taken { insn.jt } else { insn.jf });
        pc = match insn.code {
            LD_W_ABS => {
                a = d.word(insn.k);
                pc + 1
            }
            ALU_AND_K => {
                a &= insn.k;
                pc + 1
            }
            JMP_JA => pc + 1 + insn.k as usize,
            JMP_JEQ_K => cond(a == insn.k),
            JMP_JGT_K => cond(a > insn.k),
            JMP_JGE_K => cond(a >= insn.k),
            JMP_JSET_K => cond(a & insn.k != 0),
            RET_K => return insn.k,
            code => unreachable!("check_program refuses opcode {code:#x}"),
        };
    }
}

fn action_ret(action: SeccompAction, errno: Option<u32>) -> u32 {
    let data = errno.unwrap_or(EPERM);
    match action {
        SeccompAction::Kill | SeccompAction::KillThread => RET_KILL_THREAD,
        SeccompAction::KillProcess => RET_KILL_PROCESS,
        SeccompAction::Trap => RET_TRAP,
        SeccompAction::Errno => RET_ERRNO | data,
        SeccompAction::Trace => RET_TRACE | data,
        SeccompAction::Allow => RET_ALLOW,
        SeccompAction::Log => RET_LOG,
        SeccompAction::Notify => RET_USER_NOTIF,
    }
}

fn holds(a: &SeccompArg, v: u64) -> bool {
    use SeccompOperator as Op;
    match a.op {
        Op::Equal => v == a.value,
        Op::NotEqual => v != a.value,
        Op::GreaterThan => v > a.value,
        Op::GreaterOrEqual => v >= a.value,
        Op::LessThan => v < a.value,
        Op::LessOrEqual => v <= a.value,
        Op::MaskedEqual => v & a.value == a.value_two,
    }
}

/// The architectures a compiled profile covers: the native one and those it names.
pub fn arches(p: &Seccomp) -> Vec<Arch> {
    let mut v = vec![Arch::native().expect("the fuzz targets run on x86")];
    for a in p.architectures.iter().filter_map(|n| Arch::from_name(n)) {
        if !v.contains(&a) {
            v.push(a);
        }
    }
    v
}

/// The rules of one syscall number: the first unconditional rule's action, and the
/// conditional rules with theirs, in profile order; rules with the default's action are left
/// out.
type NrRules<'a> = (Option<u32>, Vec<(&'a [SeccompArg], u32)>);

/// The rules of one architecture, by syscall number.
#[derive(Default)]
struct ArchModel<'a> {
    by_nr: HashMap<u32, NrRules<'a>>,
    max_named: Option<u32>,
}

/// The profile's meaning, for a profile that compiled.
pub struct Model<'a> {
    default: u32,
    enosys: bool,
    arches: Vec<(Arch, ArchModel<'a>)>,
}

impl<'a> Model<'a> {
    pub fn new(p: &'a Seccomp) -> Self {
        let default = action_ret(p.default_action, p.default_errno_ret);
        let arches = arches(p)
            .into_iter()
            .map(|arch| {
                let mut m = ArchModel::default();
                for rule in &p.syscalls {
                    let ret = action_ret(rule.action, rule.errno_ret);
                    let mut nrs: Vec<u32> =
                        rule.names.iter().filter_map(|n| arch.syscall(n)).collect();
                    nrs.sort_unstable();
                    nrs.dedup();
                    for nr in nrs {
                        m.max_named = m.max_named.max(Some(nr));
                        if ret == default {
                            continue;
                        }
                        let e = m.by_nr.entry(nr).or_default();
                        if rule.args.is_empty() {
                            e.0.get_or_insert(ret);
                        } else {
                            e.1.push((&rule.args, ret));
                        }
                    }
                }
                (arch, m)
            })
            .collect();
        let enosys = !matches!(
            p.default_action,
            SeccompAction::Allow | SeccompAction::Log | SeccompAction::Trace
        );
        Model {
            default,
            enosys,
            arches,
        }
    }

    /// What the profile says syscall `d` gets.
    pub fn expected(&self, d: &Data) -> u32 {
        let arch = match d.arch {
            AUDIT_ARCH_X86_64 if d.nr & X32_BIT != 0 => Arch::X32,
            AUDIT_ARCH_X86_64 => Arch::X86_64,
            AUDIT_ARCH_I386 => Arch::X86,
            _ => return RET_KILL_THREAD,
        };
        let Some((_, m)) = self.arches.iter().find(|(a, _)| *a == arch) else {
            return RET_KILL_THREAD;
        };
        if let Some((unconditional, conditional)) = m.by_nr.get(&d.nr) {
            if let Some(ret) = unconditional {
                return *ret;
            }
            for (args, ret) in conditional {
                if args.iter().all(|a| holds(a, d.args[a.index as usize])) {
                    return *ret;
                }
            }
        }
        if self.enosys && m.max_named.is_some_and(|max| d.nr > max) {
            return RET_ERRNO | ENOSYS;
        }
        self.default
    }
}

/// Flags the compiled filter must carry: NEW_LISTENER exactly when a rule notifies (and is not
/// the default's action, which it cannot be), never TSYNC.
pub fn check_flags(p: &Seccomp, f: &Filter) -> Result<(), String> {
    let default = action_ret(p.default_action, p.default_errno_ret);
    let notifies = p
        .syscalls
        .iter()
        .any(|r| r.action == SeccompAction::Notify && RET_USER_NOTIF != default);
    if f.has_listener() != notifies {
        return Err(format!(
            "flags {:#x}: NEW_LISTENER set = {}, a rule notifies = {notifies}",
            f.flags,
            f.flags & FLAG_NEW_LISTENER != 0
        ));
    }
    if f.flags & FLAG_TSYNC != 0 {
        return Err(format!("flags {:#x}: TSYNC is never needed", f.flags));
    }
    Ok(())
}

/// The most probes one input gets, so that a large profile still runs fast.
const MAX_PROBES: usize = 3000;

/// Syscalls to ask about: every number the profile names on every architecture it covers and
/// their neighbours, the edges of each number range, other architectures; with argument
/// vectors on both sides of each comparison the rules make.
pub fn probes(p: &Seccomp) -> Vec<Data> {
    let mut out = Vec::new();
    let mut push = |d: Data| {
        if out.len() < MAX_PROBES {
            out.push(d);
        }
    };
    for bad in [0, AUDIT_ARCH_I386, 0xc000_00b7, u32::MAX] {
        for nr in [0, 59, 0x4000_0000 | 59, u32::MAX] {
            push(Data {
                nr,
                arch: bad,
                args: [0; 6],
            });
        }
    }
    for arch in arches(p) {
        let audit = if arch == Arch::X86 {
            AUDIT_ARCH_I386
        } else {
            AUDIT_ARCH_X86_64
        };
        let narrow = |v: u64| {
            if arch == Arch::X86 {
                v & 0xffff_ffff
            } else {
                v
            }
        };
        let base = if arch == Arch::X32 { X32_BIT } else { 0 };
        let mut nrs = vec![base, base + 1, base.wrapping_sub(1), u32::MAX, X32_BIT - 1];
        for rule in &p.syscalls {
            for nr in rule.names.iter().filter_map(|n| arch.syscall(n)) {
                nrs.extend([nr, nr.wrapping_add(1), nr.wrapping_sub(1)]);
            }
        }
        nrs.sort_unstable();
        nrs.dedup();
        for &nr in &nrs {
            let plain = |args: [u64; 6]| Data {
                nr,
                arch: audit,
                args: args.map(narrow),
            };
            push(plain([0; 6]));
            push(plain([u64::MAX; 6]));
            for rule in p.syscalls.iter().filter(|r| {
                !r.args.is_empty() && r.names.iter().any(|n| arch.syscall(n) == Some(nr))
            }) {
                // Every argument on the side that satisfies its comparison, then each one
                // moved to the values around its edge.
                let mut sat = [0u64; 6];
                for a in &rule.args {
                    sat[a.index as usize] = satisfying(a);
                }
                push(plain(sat));
                for a in &rule.args {
                    for v in edges(a) {
                        let mut args = sat;
                        args[a.index as usize] = v;
                        push(plain(args));
                    }
                }
            }
        }
    }
    out
}

fn satisfying(a: &SeccompArg) -> u64 {
    use SeccompOperator as Op;
    match a.op {
        Op::Equal | Op::GreaterOrEqual | Op::LessOrEqual => a.value,
        Op::NotEqual | Op::GreaterThan => a.value.wrapping_add(1),
        Op::LessThan => a.value.wrapping_sub(1),
        Op::MaskedEqual => a.value_two,
    }
}

fn edges(a: &SeccompArg) -> [u64; 9] {
    let v = a.value;
    [
        v,
        v.wrapping_add(1),
        v.wrapping_sub(1),
        v ^ (1 << 32),
        v & 0xffff_ffff,
        a.value_two,
        a.value_two | !v,
        a.value_two ^ 1,
        a.value_two ^ (1 << 63),
    ]
}

/// All the checks on a profile that compiled into `f`.
pub fn check_compiled(p: &Seccomp, f: &Filter) -> Result<(), String> {
    check_program(&f.program)?;
    check_flags(p, f)?;
    let model = Model::new(p);
    for d in probes(p) {
        let (got, want) = (run(&f.program, &d), model.expected(&d));
        if got != want {
            return Err(format!(
                "{d:x?}: the filter returns {got:#x}, the profile says {want:#x}"
            ));
        }
    }
    Ok(())
}

/// Syscall names the structured target draws from: x86_64, x86-only and x32-relevant ones, a
/// few with argument rules in real profiles, the ones NOTIFY may not use, and unknown names.
const NAMES: &[&str] = &[
    "read",
    "write",
    "openat",
    "close",
    "mmap",
    "clone",
    "clone3",
    "execve",
    "personality",
    "socket",
    "socketcall",
    "_llseek",
    "mkdir",
    "mkdirat",
    "sendto",
    "sendmsg",
    "setns",
    "unshare",
    "mount",
    "ptrace",
    "getppid",
    "exit_group",
    "rt_sigreturn",
    "ioctl",
    "prctl",
    "arch_prctl",
    "modify_ldt",
    "waitpid",
    "time",
    "uselib",
    "kexec_load",
    "futex_waitv",
    "process_mrelease",
    "map_shadow_stack",
    "mseal",
    "io_uring_setup",
    "no_such_syscall",
    "",
];
const ACTIONS: [SeccompAction; 9] = [
    SeccompAction::Allow,
    SeccompAction::Errno,
    SeccompAction::Kill,
    SeccompAction::KillThread,
    SeccompAction::KillProcess,
    SeccompAction::Trap,
    SeccompAction::Trace,
    SeccompAction::Log,
    SeccompAction::Notify,
];
const OPS: [SeccompOperator; 7] = [
    SeccompOperator::Equal,
    SeccompOperator::NotEqual,
    SeccompOperator::LessThan,
    SeccompOperator::LessOrEqual,
    SeccompOperator::GreaterThan,
    SeccompOperator::GreaterOrEqual,
    SeccompOperator::MaskedEqual,
];
const ARCH_NAMES: [&str; 5] = [
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_NOPE",
];
const FLAG_NAMES: [&str; 5] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    "SECCOMP_FILTER_FLAG_NOPE",
];

/// Reads fuzz bytes; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }

    /// Values around the edges that the 32-bit halves of a comparison care about.
    fn value(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << 32,
            3 => 0xffff_ffff,
            4 => u64::from(self.u8()),
            5 => u64::from(self.u8()) << 32 | u64::from(self.u8()),
            _ => (0..8).fold(0, |v, _| v << 8 | u64::from(self.u8())),
        }
    }

    fn errno(&mut self) -> Option<u32> {
        match self.u8() % 6 {
            0 => None,
            1 => Some(65535),
            2 => Some(65536),
            3 => Some(0),
            _ => Some(u32::from(self.u8())),
        }
    }
}

/// A profile built from raw fuzz bytes rather than parsed JSON: every rule well-formed, so the
/// fuzzer spends its time on combinations of actions, names, operators and values.
pub fn profile_from_bytes(data: &[u8]) -> Seccomp {
    let mut b = Bytes(data);
    let mut p = Seccomp {
        default_action: b.pick(&ACTIONS),
        default_errno_ret: b.errno(),
        ..Seccomp::default()
    };
    let arches = b.u8();
    p.architectures = (0..ARCH_NAMES.len())
        .filter(|i| arches & (1 << i) != 0)
        .map(|i| ARCH_NAMES[i].to_string())
        .collect();
    let flags = b.u8();
    p.flags = (0..FLAG_NAMES.len())
        .filter(|i| flags & (1 << i) != 0)
        .map(|i| FLAG_NAMES[i].to_string())
        .collect();
    if flags & 0x80 != 0 {
        p.listener_path = Some("/run/agent.sock".into());
    }
    for _ in 0..b.u8() % 64 {
        let names = (0..b.u8() % 4 + 1)
            .map(|_| b.pick(NAMES).to_string())
            .collect();
        let action = b.pick(&ACTIONS);
        let errno_ret = b.errno();
        let args = (0..b.u8() % 4)
            .map(|_| SeccompArg {
                // Index 6 now and then: the compiler must refuse it.
                index: u32::from(b.u8() % 7),
                op: b.pick(&OPS),
                value: b.value(),
                value_two: b.value(),
            })
            .collect();
        p.syscalls.push(SeccompSyscall {
            names,
            action,
            errno_ret,
            args,
        });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    #[test]
    fn the_structural_check_refuses_what_the_kernel_refuses() {
        let ok = [
            insn(LD_W_ABS, 0, 0, 0),
            insn(JMP_JEQ_K, 0, 1, 59),
            insn(RET_K, 0, 0, RET_ALLOW),
            insn(RET_K, 0, 0, 0),
        ];
        check_program(&ok).unwrap();
        let mut far = ok;
        far[1].jf = 2;
        assert!(check_program(&far)
            .unwrap_err()
            .contains("leaves the program"));
        let mut no_ret = ok.to_vec();
        no_ret.push(insn(LD_W_ABS, 0, 0, 4));
        assert!(check_program(&no_ret).unwrap_err().contains("not a ret"));
        let mut outside = ok;
        outside[0].k = 64;
        assert!(check_program(&outside).unwrap_err().contains("offset 64"));
        assert!(check_program(&[]).is_err());
        assert!(check_program(&vec![insn(RET_K, 0, 0, 0); MAX_INSNS + 1]).is_err());
    }

    fn corpus() -> Vec<(String, Seccomp)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/seccomp");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if let Ok(p) = serde_json::from_slice(&std::fs::read(&path).unwrap()) {
                out.push((path.display().to_string(), p));
            }
        }
        assert!(out.len() > 10, "seed corpus in {dir:?}");
        out
    }

    #[test]
    fn every_seed_profile_compiles_into_what_it_says() {
        for (name, p) in corpus() {
            if let Ok(f) = kapsel_runtime::seccomp::compile(&p) {
                check_compiled(&p, &f).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    #[test]
    fn a_wrong_answer_is_caught() {
        // Turn each ret of a compiled profile into another action: the probes must notice.
        for (name, p) in corpus() {
            let Ok(f) = kapsel_runtime::seccomp::compile(&p) else {
                continue;
            };
            for i in (0..f.program.len()).filter(|&i| f.program[i].code == RET_K) {
                let mut bad = f.clone();
                bad.program[i].k = if bad.program[i].k == RET_TRAP {
                    RET_LOG
                } else {
                    RET_TRAP
                };
                let probes = probes(&p);
                let reached = probes
                    .iter()
                    .any(|d| run(&f.program, d) != run(&bad.program, d));
                if reached {
                    assert!(
                        check_compiled(&p, &bad).is_err(),
                        "{name}: ret {i} changed unnoticed"
                    );
                }
            }
        }
    }
}
