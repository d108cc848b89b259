//! `linux.seccomp` → one BPF program covering every architecture of the profile.
//!
//! Layout (execution order):
//!
//! ```text
//!   ld arch; jeq AUDIT_ARCH_X86_64 → [x86_64/x32]; jeq AUDIT_ARCH_I386 → [i386]; ret KILL
//!   [section]  ld nr; binary search over the syscall number space → ret, or a rule block
//!   [block]    rules of one syscall in profile order: arguments compared 32 bits at a time
//! ```
//!
//! Each section splits the 32-bit number space into intervals of equal outcome (runs of
//! allowed syscalls merge), so the search tree has few nodes and a syscall costs about
//! log2(intervals) + 3 instructions. x86_64 and x32 share AUDIT_ARCH_X86_64: numbers with
//! `__X32_SYSCALL_BIT` are x32's half of that section, the "bad architecture" action when x32
//! is not in the profile (as libseccomp does).

use super::bpf::{self, Builder, Label, SockFilter};
use super::{tables, SeccompError};
use crate::spec::{Seccomp, SeccompAction, SeccompArg, SeccompOperator};
use std::collections::{BTreeMap, BTreeSet};

// SECCOMP_RET_* (`<linux/seccomp.h>`).
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_DATA: u32 = 0x0000_ffff;

// SECCOMP_FILTER_FLAG_*.
pub const FLAG_TSYNC: u32 = 1 << 0;
pub const FLAG_LOG: u32 = 1 << 1;
pub const FLAG_SPEC_ALLOW: u32 = 1 << 2;
pub const FLAG_NEW_LISTENER: u32 = 1 << 3;
pub const FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// The flags of runtime-spec, with their kernel values (TSYNC is accepted and not needed:
/// init is single-threaded).
pub const FLAGS: &[(&str, u32)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", FLAG_TSYNC),
    ("SECCOMP_FILTER_FLAG_LOG", FLAG_LOG),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", FLAG_SPEC_ALLOW),
    (
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        FLAG_WAIT_KILLABLE_RECV,
    ),
];

pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
pub const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a syscall of an architecture missing from the filter gets: libseccomp's default
/// bad-architecture action, SCMP_ACT_KILL, which runc keeps.
pub const RET_BAD_ARCH: u32 = RET_KILL_THREAD;

/// Architectures this compiler has syscall tables for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    X86,
    X32,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::X86, Arch::X32];

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::X86 => "SCMP_ARCH_X86",
            Arch::X32 => "SCMP_ARCH_X32",
        }
    }

    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The architecture this runtime was built for, which every filter covers (as libseccomp
    /// always includes the native architecture).
    pub fn native() -> Option<Arch> {
        if cfg!(all(target_arch = "x86_64", target_pointer_width = "64")) {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "x86_64") {
            Some(Arch::X32)
        } else if cfg!(target_arch = "x86") {
            Some(Arch::X86)
        } else {
            None
        }
    }

    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => tables::X86_64,
            Arch::X86 => tables::X86,
            Arch::X32 => tables::X32,
        }
    }

    /// The number of syscall `name` on this architecture (x32 with its bit set).
    pub fn syscall(self, name: &str) -> Option<u32> {
        let t = self.table();
        t.binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| t[i].1)
    }

    /// Arguments are 32-bit registers, zero-extended in `seccomp_data`.
    fn narrow_args(self) -> bool {
        self == Arch::X86
    }

    /// The syscall numbers this architecture owns in its audit architecture.
    fn range(self) -> (u32, u32) {
        match self {
            Arch::X86_64 => (0, X32_SYSCALL_BIT - 1),
            Arch::X32 => (X32_SYSCALL_BIT, u32::MAX),
            Arch::X86 => (0, u32::MAX),
        }
    }
}

/// Architecture names libseccomp knows and this compiler has no table for: a profile that
/// lists them (docker's lists them all) still compiles for the ones above.
const OTHER_ARCHES: &[&str] = &[
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV32",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// A compiled filter and the flags to load it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub program: Vec<SockFilter>,
    /// `SECCOMP_FILTER_FLAG_*`; NEW_LISTENER when a rule notifies.
    pub flags: u32,
}

impl Filter {
    pub fn has_listener(&self) -> bool {
        self.flags & FLAG_NEW_LISTENER != 0
    }
}

/// The `SECCOMP_RET_*` value of an action.
pub fn action_ret(action: SeccompAction, errno: Option<u32>) -> Result<u32, u32> {
    let data = |v: Option<u32>| {
        let v = v.unwrap_or(libc::EPERM as u32);
        if v > RET_DATA {
            Err(v)
        } else {
            Ok(v)
        }
    };
    Ok(match action {
        SeccompAction::Kill | SeccompAction::KillThread => RET_KILL_THREAD,
        SeccompAction::KillProcess => RET_KILL_PROCESS,
        SeccompAction::Trap => RET_TRAP,
        SeccompAction::Errno => RET_ERRNO | data(errno)?,
        SeccompAction::Trace => RET_TRACE | data(errno)?,
        SeccompAction::Allow => RET_ALLOW,
        SeccompAction::Log => RET_LOG,
        SeccompAction::Notify => RET_USER_NOTIF,
    })
}

/// One profile rule, checked.
struct Rule<'a> {
    names: &'a [String],
    ret: u32,
    args: &'a [SeccompArg],
    /// Same action as the default: only counts for the highest syscall number (as in runc).
    redundant: bool,
}

/// What one syscall number leads to in a section.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leaf {
    Ret(u32),
    /// The conditional rules (indices, in profile order) of syscall `nr` of `arch`.
    Block {
        arch: Arch,
        nr: u32,
    },
}

/// Per architecture: the syscalls that have rules, and the highest syscall number named.
struct ArchRules {
    by_nr: BTreeMap<u32, Outcome>,
    max_nr: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// An unconditional rule: it wins over every conditional one (libseccomp does the same).
    Always(u32),
    /// Conditional rules, tried in profile order; the first whose arguments all match wins.
    Rules(Vec<usize>),
}

pub fn compile(p: &Seccomp, native: Arch) -> Result<Filter, SeccompError> {
    if p.default_action == SeccompAction::Notify {
        return Err(SeccompError::NotifyDefault);
    }
    let default = action_ret(p.default_action, p.default_errno_ret)
        .map_err(|value| SeccompError::Errno { value })?;

    let mut arches = BTreeSet::from([native]);
    for name in &p.architectures {
        match Arch::from_name(name) {
            Some(a) => {
                arches.insert(a);
            }
            None if OTHER_ARCHES.contains(&name.as_str()) => {
                tracing::debug!("seccomp: no syscall table for {name}: skipped");
            }
            None => return Err(SeccompError::UnknownArch { name: name.clone() }),
        }
    }

    let mut flags = 0;
    for f in &p.flags {
        match FLAGS.iter().find(|(n, _)| n == f) {
            Some((_, v)) => flags |= v,
            None => return Err(SeccompError::UnknownFlag { name: f.clone() }),
        }
    }
    flags &= !FLAG_TSYNC;

    let mut rules = Vec::with_capacity(p.syscalls.len());
    let mut notify = false;
    for sc in &p.syscalls {
        let ret =
            action_ret(sc.action, sc.errno_ret).map_err(|value| SeccompError::Errno { value })?;
        if let Some(a) = sc.args.iter().find(|a| a.index > 5) {
            return Err(SeccompError::ArgIndex {
                names: sc.names.join(","),
                index: a.index,
            });
        }
        let redundant = ret == default;
        if sc.action == SeccompAction::Notify && !redundant {
            // After loading the filter, init sends the listener's number to the parent; a
            // notifying send would wait for an agent that cannot have the listener yet.
            if let Some(n) = sc
                .names
                .iter()
                .find(|n| NOTIFY_FORBIDDEN.contains(&n.as_str()))
            {
                return Err(SeccompError::NotifyOn { name: n.clone() });
            }
            notify = true;
        }
        rules.push(Rule {
            names: &sc.names,
            ret,
            args: &sc.args,
            redundant,
        });
    }
    if notify {
        if p.listener_path
            .as_ref()
            .is_none_or(|l| l.as_os_str().is_empty())
        {
            return Err(SeccompError::NoListenerPath);
        }
        flags |= FLAG_NEW_LISTENER;
    } else {
        // The kernel accepts WAIT_KILLABLE_RECV only together with a listener.
        flags &= !FLAG_WAIT_KILLABLE_RECV;
    }

    // runc answers ENOSYS, not the default, for syscalls newer than any the profile names, so
    // that programs fall back from syscalls the profile predates (clone3, say). Not when the
    // default lets syscalls through anyway.
    let enosys = !matches!(
        p.default_action,
        SeccompAction::Allow | SeccompAction::Log | SeccompAction::Trace
    );
    let per_arch: BTreeMap<Arch, ArchRules> =
        arches.iter().map(|&a| (a, arch_rules(a, &rules))).collect();
    let ctx = Ctx {
        rules: &rules,
        per_arch: &per_arch,
        default,
        enosys,
    };

    let mut b = Builder::new();
    // The section written last sits closest to the dispatch: native first.
    let mut sections = Vec::new();
    if arches.contains(&Arch::X86) {
        let l = ctx.section(&mut b, &[(Arch::X86, true)]);
        sections.push((AUDIT_ARCH_I386, l));
    }
    if arches.contains(&Arch::X86_64) || arches.contains(&Arch::X32) {
        let parts = [
            (Arch::X86_64, arches.contains(&Arch::X86_64)),
            (Arch::X32, arches.contains(&Arch::X32)),
        ];
        let l = ctx.section(&mut b, &parts);
        sections.push((AUDIT_ARCH_X86_64, l));
    }
    let mut next = b.ret(RET_BAD_ARCH);
    for (audit, l) in sections {
        next = b.jump(bpf::JEQ, audit, l, next);
    }
    let entry = b.load(bpf::OFF_ARCH, next);
    let program = b.finish(entry);
    if program.len() > bpf::MAX_INSNS {
        return Err(SeccompError::TooLong { len: program.len() });
    }
    Ok(Filter { program, flags })
}

/// Syscalls that must not notify: init itself makes them before the agent has the listener.
pub const NOTIFY_FORBIDDEN: &[&str] = &["sendto", "sendmsg", "write"];

fn arch_rules(arch: Arch, rules: &[Rule]) -> ArchRules {
    let mut by_nr = BTreeMap::new();
    let mut max_nr = None;
    for (i, r) in rules.iter().enumerate() {
        for name in r.names {
            let Some(nr) = arch.syscall(name) else {
                continue;
            };
            max_nr = max_nr.max(Some(nr));
            if r.redundant {
                continue;
            }
            let e = by_nr
                .entry(nr)
                .or_insert_with(|| Outcome::Rules(Vec::new()));
            match e {
                Outcome::Always(_) => {}
                Outcome::Rules(_) if r.args.is_empty() => *e = Outcome::Always(r.ret),
                Outcome::Rules(v) => {
                    if v.last() != Some(&i) {
                        v.push(i);
                    }
                }
            }
        }
    }
    ArchRules { by_nr, max_nr }
}

struct Ctx<'a> {
    rules: &'a [Rule<'a>],
    per_arch: &'a BTreeMap<Arch, ArchRules>,
    default: u32,
    enosys: bool,
}

impl Ctx<'_> {
    /// One audit architecture: `ld nr` and the search over `parts` (each architecture with
    /// whether the profile covers it), then the rule blocks.
    fn section(&self, b: &mut Builder, parts: &[(Arch, bool)]) -> Label {
        let mut leaves: Vec<(u32, Leaf)> = Vec::new();
        for &(arch, enabled) in parts {
            let (lo, hi) = arch.range();
            if enabled {
                self.intervals(arch, lo, hi, &mut leaves);
            } else {
                leaves.push((lo, Leaf::Ret(RET_BAD_ARCH)));
            }
        }
        leaves.dedup_by(|later, earlier| later.1 == earlier.1 && matches!(later.1, Leaf::Ret(_)));

        let mut labelled = Vec::with_capacity(leaves.len());
        for (start, leaf) in &leaves {
            if let Leaf::Block { arch, nr } = leaf {
                labelled.push((*start, Some(self.block(b, *arch, *nr))));
            } else {
                labelled.push((*start, None));
            }
        }
        let labelled: Vec<(u32, Label)> = labelled
            .into_iter()
            .zip(&leaves)
            .map(|((start, l), (_, leaf))| match (l, leaf) {
                (Some(l), _) => (start, l),
                (None, Leaf::Ret(k)) => (start, b.ret(*k)),
                (None, Leaf::Block { .. }) => unreachable!("blocks are labelled above"),
            })
            .collect();
        let tree = search(b, &labelled);
        b.load(bpf::OFF_NR, tree)
    }

    /// The leaves of `arch`'s numbers `lo..=hi`, in order, each starting an interval.
    fn intervals(&self, arch: Arch, lo: u32, hi: u32, out: &mut Vec<(u32, Leaf)>) {
        let ar = &self.per_arch[&arch];
        let mut cursor = Some(lo);
        for (&nr, outcome) in ar.by_nr.range(lo..=hi) {
            if cursor.is_some_and(|c| c < nr) {
                out.push((cursor.unwrap_or(lo), Leaf::Ret(self.default)));
            }
            out.push((
                nr,
                match outcome {
                    Outcome::Always(k) => Leaf::Ret(*k),
                    Outcome::Rules(_) => Leaf::Block { arch, nr },
                },
            ));
            cursor = nr.checked_add(1);
        }
        let Some(c) = cursor.filter(|&c| c <= hi) else {
            return;
        };
        let stub_from = ar
            .max_nr
            .filter(|_| self.enosys)
            .and_then(|m| m.checked_add(1))
            .filter(|&s| s >= c && s <= hi);
        match stub_from {
            Some(s) => {
                if c < s {
                    out.push((c, Leaf::Ret(self.default)));
                }
                out.push((s, Leaf::Ret(RET_ERRNO | libc::ENOSYS as u32)));
            }
            None => out.push((c, Leaf::Ret(self.default))),
        }
    }

    /// The conditional rules of syscall `nr`: first match wins, else the default.
    fn block(&self, b: &mut Builder, arch: Arch, nr: u32) -> Label {
        let Some(Outcome::Rules(ids)) = self.per_arch[&arch].by_nr.get(&nr) else {
            unreachable!("a block leaf has conditional rules");
        };
        let mut next = b.ret(self.default);
        for &i in ids.iter().rev() {
            let r = &self.rules[i];
            let mut t = b.ret(r.ret);
            for a in r.args.iter().rev() {
                t = compare(b, arch.narrow_args(), a, t, next);
            }
            next = t;
        }
        next
    }
}

/// A balanced search over interval starts (A holds the syscall number).
fn search(b: &mut Builder, iv: &[(u32, Label)]) -> Label {
    if iv.len() == 1 {
        return iv[0].1;
    }
    let mid = iv.len() / 2;
    let hi = search(b, &iv[mid..]);
    let lo = search(b, &iv[..mid]);
    b.jump(bpf::JGE, iv[mid].0, hi, lo)
}

fn split(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// `if (arg op value) goto t else goto f`, 64-bit unsigned, one 32-bit half at a time. With
/// `narrow` the argument is a zero-extended 32-bit register: its high half is 0, known here.
fn compare(b: &mut Builder, narrow: bool, a: &SeccompArg, t: Label, f: Label) -> Label {
    use SeccompOperator as Op;
    match a.op {
        Op::Equal => equal(b, narrow, a.index, a.value, t, f),
        Op::NotEqual => equal(b, narrow, a.index, a.value, f, t),
        Op::GreaterThan => greater(b, narrow, a.index, a.value, bpf::JGT, t, f),
        Op::GreaterOrEqual => greater(b, narrow, a.index, a.value, bpf::JGE, t, f),
        // a < v is !(a >= v); a <= v is !(a > v).
        Op::LessThan => greater(b, narrow, a.index, a.value, bpf::JGE, f, t),
        Op::LessOrEqual => greater(b, narrow, a.index, a.value, bpf::JGT, f, t),
        Op::MaskedEqual => masked(b, narrow, a.index, a.value, a.value_two, t, f),
    }
}

fn equal(b: &mut Builder, narrow: bool, i: u32, v: u64, t: Label, f: Label) -> Label {
    let (vh, vl) = split(v);
    if narrow && vh != 0 {
        return f;
    }
    let j = b.jump(bpf::JEQ, vl, t, f);
    let lo = b.load(bpf::off_arg_lo(i), j);
    if narrow {
        return lo;
    }
    let j = b.jump(bpf::JEQ, vh, lo, f);
    b.load(bpf::off_arg_lo(i) + 4, j)
}

/// `a > v` (`lo_op` JGT) or `a >= v` (JGE): the high halves decide unless equal.
fn greater(b: &mut Builder, narrow: bool, i: u32, v: u64, lo_op: u16, t: Label, f: Label) -> Label {
    let (vh, vl) = split(v);
    if narrow && vh != 0 {
        return f;
    }
    let j = b.jump(lo_op, vl, t, f);
    let lo = b.load(bpf::off_arg_lo(i), j);
    if narrow {
        return lo;
    }
    let eq = b.jump(bpf::JEQ, vh, lo, f);
    let gt = b.jump(bpf::JGT, vh, t, eq);
    b.load(bpf::off_arg_lo(i) + 4, gt)
}

/// `(a & mask) == datum`.
fn masked(
    b: &mut Builder,
    narrow: bool,
    i: u32,
    mask: u64,
    datum: u64,
    t: Label,
    f: Label,
) -> Label {
    let (mh, ml) = split(mask);
    let (dh, dl) = split(datum);
    // Bits outside the mask can never equal the datum's.
    if dl & !ml != 0 || dh & !mh != 0 || (narrow && dh != 0) {
        return f;
    }
    let half = |b: &mut Builder, off: u32, m: u32, d: u32, t: Label, f: Label| -> Label {
        if m == 0 {
            return t; // (x & 0) == 0, and d is 0 here
        }
        let j = b.jump(bpf::JEQ, d, t, f);
        let j = if m == u32::MAX { j } else { b.and(m, j) };
        b.load(off, j)
    };
    let lo = half(b, bpf::off_arg_lo(i), ml, dl, t, f);
    if narrow {
        return lo;
    }
    half(b, bpf::off_arg_lo(i) + 4, mh, dh, lo, f)
}
