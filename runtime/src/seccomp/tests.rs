//! Compiled programs run on a small BPF interpreter against synthetic `seccomp_data`.

use super::bpf::{self, SockFilter};
use super::compile::{self, *};
use super::{Arch, SeccompError};
use crate::spec::{
    Seccomp, SeccompAction as Act, SeccompArg, SeccompOperator as Op, SeccompSyscall,
};
use serde_json::json;

const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// `struct seccomp_data`.
#[derive(Debug, Clone, Copy)]
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

fn call(nr: u32, args: &[u64]) -> Data {
    let mut a = [0; 6];
    a[..args.len()].copy_from_slice(args);
    Data {
        nr,
        arch: AUDIT_ARCH_X86_64,
        args: a,
    }
}

impl Data {
    fn bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_le_bytes());
        b[4..8].copy_from_slice(&self.arch.to_le_bytes());
        // instruction_pointer (8..16) stays 0.
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        b
    }
}

/// Runs `prog` the way the kernel would; returns the action and how many instructions ran.
/// Panics on anything the compiler must not emit or the kernel would refuse.
fn run(prog: &[SockFilter], d: &Data) -> (u32, usize) {
    assert!(!prog.is_empty() && prog.len() <= bpf::MAX_INSNS);
    let mem = d.bytes();
    let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
    loop {
        let i = prog[pc];
        steps += 1;
        let cond = |taken: bool| pc + 1 + usize::from(if taken { i.jt } else { i.jf });
        pc = match i.code {
            c if c == bpf::LD | bpf::W | bpf::ABS => {
                let k = i.k as usize;
                assert!(
                    k.is_multiple_of(4) && k + 4 <= mem.len(),
                    "bad load offset {k}"
                );
                acc = u32::from_le_bytes(mem[k..k + 4].try_into().unwrap());
                pc + 1
            }
            c if c == bpf::ALU | bpf::AND | bpf::K => {
                acc &= i.k;
                pc + 1
            }
            c if c == bpf::JMP | bpf::JA => pc + 1 + i.k as usize,
            c if c == bpf::JMP | bpf::JEQ | bpf::K => cond(acc == i.k),
            c if c == bpf::JMP | bpf::JGT | bpf::K => cond(acc > i.k),
            c if c == bpf::JMP | bpf::JGE | bpf::K => cond(acc >= i.k),
            c if c == bpf::JMP | bpf::JSET | bpf::K => cond(acc & i.k != 0),
            c if c == bpf::RET | bpf::K => return (i.k, steps),
            c => panic!("unexpected opcode {c:#x} at {pc}"),
        };
        assert!(pc < prog.len(), "jump past the end");
    }
}

fn profile(v: serde_json::Value) -> Seccomp {
    serde_json::from_value(v).expect("profile parses")
}

fn build(p: &Seccomp) -> Filter {
    compile::compile(p, Arch::X86_64).expect("profile compiles")
}

fn nr(arch: Arch, name: &str) -> u32 {
    arch.syscall(name)
        .unwrap_or_else(|| panic!("{name} on {arch:?}"))
}

fn ret_of(f: &Filter, d: Data) -> u32 {
    run(&f.program, &d).0
}

const EPERM: u32 = RET_ERRNO | 1;
const ENOSYS: u32 = RET_ERRNO | 38;

#[test]
fn every_action() {
    let p = profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getuid"], "action": "SCMP_ACT_KILL"},
            {"names": ["getgid"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["geteuid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getegid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["gettid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["getpgrp"], "action": "SCMP_ACT_TRACE"},
            {"names": ["getsid"], "action": "SCMP_ACT_LOG"},
            {"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"}
        ]
    }));
    let f = build(&p);
    let x = |name| ret_of(&f, call(nr(Arch::X86_64, name), &[]));
    assert_eq!(x("getpid"), RET_ERRNO | 5);
    assert_eq!(x("getppid"), EPERM);
    assert_eq!(x("getuid"), RET_KILL_THREAD);
    assert_eq!(x("getgid"), RET_KILL_THREAD);
    assert_eq!(x("geteuid"), RET_KILL_PROCESS);
    assert_eq!(x("getegid"), RET_TRAP);
    assert_eq!(x("gettid"), RET_TRACE | 7);
    assert_eq!(x("getpgrp"), RET_TRACE | 1);
    assert_eq!(x("getsid"), RET_LOG);
    assert_eq!(x("getcwd"), RET_USER_NOTIF);
    assert_eq!(x("read"), RET_ALLOW);
    assert_eq!(x("write"), RET_ALLOW);
    assert_eq!(f.flags, FLAG_NEW_LISTENER);
}

#[test]
fn default_action_and_errno() {
    for (p, want) in [
        (json!({"defaultAction": "SCMP_ACT_ERRNO"}), EPERM),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}),
            ENOSYS,
        ),
        (
            json!({"defaultAction": "SCMP_ACT_KILL_PROCESS"}),
            RET_KILL_PROCESS,
        ),
        (json!({"defaultAction": "SCMP_ACT_LOG"}), RET_LOG),
        (
            json!({"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 3}),
            RET_TRACE | 3,
        ),
    ] {
        let f = build(&profile(p));
        assert_eq!(ret_of(&f, call(0, &[])), want);
        assert_eq!(ret_of(&f, call(1000, &[])), want);
    }
}

/// Values around the 32-bit boundaries, where hi/lo comparisons go wrong.
const EDGES: [u64; 13] = [
    0,
    1,
    2,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0001,
    0x1_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff_0000_0000,
    u64::MAX,
];

fn holds(op: Op, a: u64, v: u64, v2: u64) -> bool {
    match op {
        Op::NotEqual => a != v,
        Op::LessThan => a < v,
        Op::LessOrEqual => a <= v,
        Op::Equal => a == v,
        Op::GreaterOrEqual => a >= v,
        Op::GreaterThan => a > v,
        Op::MaskedEqual => a & v == v2,
    }
}

const OPS: [Op; 7] = [
    Op::NotEqual,
    Op::LessThan,
    Op::LessOrEqual,
    Op::Equal,
    Op::GreaterOrEqual,
    Op::GreaterThan,
    Op::MaskedEqual,
];

fn one_rule(op: Op, index: u32, value: u64, value_two: u64) -> Seccomp {
    Seccomp {
        default_action: Act::Allow,
        architectures: vec!["SCMP_ARCH_X86".into(), "SCMP_ARCH_X32".into()],
        syscalls: vec![SeccompSyscall {
            names: vec!["ioctl".into()],
            action: Act::Errno,
            errno_ret: Some(9),
            args: vec![SeccompArg {
                index,
                value,
                value_two,
                op,
            }],
        }],
        ..Default::default()
    }
}

#[test]
fn every_operator_on_64_bit_edges() {
    let mut checked = 0;
    for op in OPS {
        for &v in &EDGES {
            // MASKED_EQ: value is the mask, valueTwo the datum.
            let datums: Vec<u64> = if op == Op::MaskedEqual {
                EDGES
                    .iter()
                    .map(|d| d & v)
                    .chain([1, 0x1_0000_0000])
                    .collect()
            } else {
                vec![0]
            };
            for &v2 in &datums {
                let f = build(&one_rule(op, 3, v, v2));
                for &a in &EDGES {
                    let want = if holds(op, a, v, v2) {
                        RET_ERRNO | 9
                    } else {
                        RET_ALLOW
                    };
                    let mut args = [0u64; 6];
                    args[3] = a;
                    // Other arguments must not matter.
                    args[2] = !a;
                    args[4] = a.rotate_left(17);
                    let d = call(nr(Arch::X86_64, "ioctl"), &args);
                    assert_eq!(
                        ret_of(&f, d),
                        want,
                        "x86_64 {op:?} arg={a:#x} v={v:#x} v2={v2:#x}"
                    );
                    let d = Data {
                        nr: nr(Arch::X32, "ioctl"),
                        ..d
                    };
                    assert_eq!(
                        ret_of(&f, d),
                        want,
                        "x32 {op:?} arg={a:#x} v={v:#x} v2={v2:#x}"
                    );
                    // i386: arguments are 32-bit registers, zero-extended.
                    let narrow = a & 0xffff_ffff;
                    let want = if holds(op, narrow, v, v2) {
                        RET_ERRNO | 9
                    } else {
                        RET_ALLOW
                    };
                    args[3] = narrow;
                    let d = Data {
                        nr: nr(Arch::X86, "ioctl"),
                        arch: AUDIT_ARCH_I386,
                        args,
                    };
                    assert_eq!(
                        ret_of(&f, d),
                        want,
                        "x86 {op:?} arg={a:#x} v={v:#x} v2={v2:#x}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000);
}

#[test]
fn args_of_one_rule_are_anded() {
    let p = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{
            "names": ["openat"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 2, "value": 5, "op": "SCMP_CMP_GT"},
                {"index": 5, "value": 0xff, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}
            ]
        }]
    }));
    let f = build(&p);
    let n = nr(Arch::X86_64, "openat");
    assert_eq!(ret_of(&f, call(n, &[1, 0, 6, 0, 0, 0x310])), RET_ALLOW);
    assert_eq!(ret_of(&f, call(n, &[2, 0, 6, 0, 0, 0x310])), EPERM);
    assert_eq!(ret_of(&f, call(n, &[1, 0, 5, 0, 0, 0x310])), EPERM);
    assert_eq!(ret_of(&f, call(n, &[1, 0, 6, 0, 0, 0x311])), EPERM);
    assert_eq!(ret_of(&f, call(n, &[1 | 1 << 32, 0, 6, 0, 0, 0x10])), EPERM);
}

#[test]
fn rules_for_one_syscall_are_ored_in_order() {
    // As in docker's profile: personality listed once per allowed value.
    let mut syscalls = Vec::new();
    for v in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}));
    }
    // Overlapping rules with different actions: the first match wins.
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
        "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]}));
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}]}));
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_LOG",
        "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}));
    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": syscalls
    })));
    let p = nr(Arch::X86_64, "personality");
    for v in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        assert_eq!(ret_of(&f, call(p, &[v])), RET_ALLOW, "personality({v:#x})");
    }
    for v in [1u64, 0x40008, 0x1_0000_0000, 0x1_ffff_ffff] {
        assert_eq!(ret_of(&f, call(p, &[v])), EPERM, "personality({v:#x})");
    }
    let s = nr(Arch::X86_64, "socket");
    assert_eq!(ret_of(&f, call(s, &[16, 3, 9])), RET_ERRNO | 22);
    assert_eq!(ret_of(&f, call(s, &[16, 1, 0])), RET_ALLOW);
    assert_eq!(ret_of(&f, call(s, &[2, 1, 0])), RET_LOG);
    assert_eq!(ret_of(&f, call(s, &[2, 2, 0])), EPERM);
}

#[test]
fn unconditional_rule_wins_and_default_action_rules_are_dropped() {
    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["kill"], "action": "SCMP_ACT_LOG",
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
            {"names": ["kill"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["kill"], "action": "SCMP_ACT_TRAP"},
            {"names": ["tkill"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["tkill"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_NE"}]}
        ]
    })));
    let k = nr(Arch::X86_64, "kill");
    assert_eq!(ret_of(&f, call(k, &[1, 9])), RET_ALLOW);
    assert_eq!(ret_of(&f, call(k, &[1, 15])), RET_ALLOW);
    // The ERRNO rule equals the default and is dropped; the conditional one stays.
    let t = nr(Arch::X86_64, "tkill");
    assert_eq!(ret_of(&f, call(t, &[1, 15])), RET_ALLOW);
    assert_eq!(ret_of(&f, call(t, &[1, 9])), EPERM);
}

#[test]
fn architectures_are_checked_first() {
    let p = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [{"names": ["getpid", "_llseek"], "action": "SCMP_ACT_ALLOW"}]
    }));
    let f = build(&p);
    assert_eq!(ret_of(&f, call(39, &[])), RET_ALLOW);
    let i386 = |nr| Data {
        nr,
        arch: AUDIT_ARCH_I386,
        args: [0; 6],
    };
    assert_eq!(ret_of(&f, i386(20)), RET_ALLOW, "getpid is 20 on i386");
    assert_eq!(
        ret_of(&f, i386(140)),
        RET_ALLOW,
        "_llseek exists on i386 only"
    );
    assert_eq!(ret_of(&f, i386(39)), EPERM, "39 is mkdir on i386");
    let other = Data {
        arch: AUDIT_ARCH_AARCH64,
        ..call(172, &[])
    };
    assert_eq!(ret_of(&f, other), RET_BAD_ARCH);

    // Without SCMP_ARCH_X86, i386 syscalls are a bad architecture.
    let f = build(&profile(json!({"defaultAction": "SCMP_ACT_ALLOW"})));
    assert_eq!(ret_of(&f, i386(20)), RET_BAD_ARCH);
    assert_eq!(ret_of(&f, call(39, &[])), RET_ALLOW);
}

#[test]
fn x32_syscalls_do_not_match_x86_64_rules() {
    let rules = json!([{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3}]);
    let x32_getpid = nr(Arch::X32, "getpid");
    assert_eq!(x32_getpid, 0x4000_0000 | 39);

    let f = build(&profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}),
    ));
    assert_eq!(ret_of(&f, call(39, &[])), RET_ERRNO | 3);
    assert_eq!(ret_of(&f, call(x32_getpid, &[])), RET_BAD_ARCH);
    assert_eq!(ret_of(&f, call(u32::MAX, &[])), RET_BAD_ARCH);

    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X32"], "syscalls": rules
    })));
    assert_eq!(ret_of(&f, call(39, &[])), RET_ERRNO | 3);
    assert_eq!(ret_of(&f, call(x32_getpid, &[])), RET_ERRNO | 3);
    // x32's own numbers (512 and up) and x86_64's 512 are different syscalls.
    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X32"],
        "syscalls": [{"names": ["rt_sigaction"], "action": "SCMP_ACT_KILL_PROCESS"}]
    })));
    assert_eq!(ret_of(&f, call(13, &[])), RET_KILL_PROCESS);
    assert_eq!(ret_of(&f, call(0x4000_0000 | 512, &[])), RET_KILL_PROCESS);
    assert_eq!(ret_of(&f, call(0x4000_0000 | 13, &[])), RET_ALLOW);
}

#[test]
fn enosys_for_syscalls_newer_than_the_profile() {
    let rules = json!([
        {"names": ["read", "openat"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO"}
    ]);
    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules
    })));
    let openat = nr(Arch::X86_64, "openat");
    assert_eq!(ret_of(&f, call(openat, &[])), RET_ALLOW);
    assert_eq!(
        ret_of(&f, call(1, &[])),
        EPERM,
        "write is older: the default"
    );
    assert_eq!(ret_of(&f, call(openat + 1, &[])), ENOSYS);
    assert_eq!(ret_of(&f, call(0x3fff_ffff, &[])), ENOSYS);
    let x32_openat = nr(Arch::X32, "openat");
    assert_eq!(ret_of(&f, call(x32_openat + 1, &[])), ENOSYS);
    assert_eq!(ret_of(&f, call(0x4000_0001, &[])), EPERM);
    let i386 = Data {
        arch: AUDIT_ARCH_I386,
        ..call(nr(Arch::X86, "openat") + 1, &[])
    };
    assert_eq!(ret_of(&f, i386), ENOSYS);

    // A permissive default needs no stub.
    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]
    })));
    assert_eq!(ret_of(&f, call(1000, &[])), RET_ALLOW);
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall", "getpid", "_llseek"], "action": "SCMP_ACT_ERRNO"}]
    })));
    assert_eq!(ret_of(&f, call(39, &[])), EPERM);
    assert_eq!(ret_of(&f, call(40, &[])), RET_ALLOW);
}

#[test]
fn long_programs_use_long_jumps() {
    // Every x86_64 syscall gets its own conditional rule: far more than 255 instructions
    // between the search tree and the blocks, and between blocks and shared returns.
    let names: Vec<&str> = super::tables::X86_64.iter().map(|(n, _)| *n).collect();
    let syscalls: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": (i % 4000) + 1,
                   "args": [{"index": i % 6, "value": i as u64 * 0x1_0000_0001, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let f = build(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": syscalls
    })));
    assert!(f.program.len() > 1000, "{} instructions", f.program.len());
    assert!(f
        .program
        .iter()
        .any(|i| i.code == bpf::JMP | bpf::JA && i.k > 255));
    for (i, n) in names.iter().enumerate() {
        let sysno = nr(Arch::X86_64, n);
        let mut args = [0u64; 6];
        args[i % 6] = i as u64 * 0x1_0000_0001;
        let want = RET_ERRNO | ((i % 4000) + 1) as u32;
        assert_eq!(ret_of(&f, call(sysno, &args)), want, "{n}");
        args[i % 6] ^= 1 << 40;
        assert_eq!(
            ret_of(&f, call(sysno, &args)),
            RET_ALLOW,
            "{n} with another arg"
        );
    }
}

#[test]
fn profile_errors() {
    let err = |v: serde_json::Value| compile::compile(&profile(v), Arch::X86_64).unwrap_err();
    assert!(matches!(
        err(json!({"defaultAction": "SCMP_ACT_NOTIFY"})),
        SeccompError::NotifyDefault
    ));
    assert!(matches!(
        err(json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]})),
        SeccompError::NoListenerPath
    ));
    assert!(matches!(
        err(
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
            "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]})
        ),
        SeccompError::NotifyOn { .. }
    ));
    assert!(matches!(
        err(json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]})),
        SeccompError::UnknownArch { .. }
    ));
    assert!(matches!(
        err(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FOO"]})),
        SeccompError::UnknownFlag { .. }
    ));
    assert!(matches!(
        err(
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]})
        ),
        SeccompError::ArgIndex { index: 6, .. }
    ));
    assert!(matches!(
        err(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000})),
        SeccompError::Errno { value: 70000 }
    ));
    let e = serde_json::from_value::<Seccomp>(json!({"defaultAction": "SCMP_ACT_BOGUS"}));
    assert!(e.unwrap_err().to_string().contains("SCMP_ACT_BOGUS"));
}

#[test]
fn flags() {
    let f = |flags: serde_json::Value, notify: bool| {
        let mut p = json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": flags});
        if notify {
            p["listenerPath"] = json!("/run/agent");
            p["syscalls"] = json!([{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]);
        }
        build(&profile(p)).flags
    };
    let all = json!([
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
    ]);
    assert_eq!(f(all.clone(), false), FLAG_LOG | FLAG_SPEC_ALLOW);
    assert_eq!(
        f(all, true),
        FLAG_LOG | FLAG_SPEC_ALLOW | FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV
    );
    assert_eq!(f(json!(null), false), 0);
}

#[test]
fn spec_types_round_trip_and_ignore_unknown_fields() {
    let v = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": null,
        "unknownField": {"x": 1},
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": null, "comment": "x"},
                     {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 2, "value": 4, "op": "SCMP_CMP_MASKED_EQ"}]}]
    });
    let p = profile(v);
    assert_eq!(p.default_errno_ret, Some(38));
    assert!(p.syscalls[0].args.is_empty());
    assert_eq!(p.syscalls[1].args[0].value_two, 0);
    let back = serde_json::to_value(&p).unwrap();
    assert_eq!(back["syscalls"][1]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(profile(back), p);
}

/// The containers-common profile format (docker's): keeps the rules that apply to a
/// container with `caps` on `arch`, as podman and docker do when they write config.json.
fn from_containers_profile(v: &serde_json::Value, caps: &[&str], arch: &str) -> Seccomp {
    let has = |list: &serde_json::Value, x: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|e| e.as_str() == Some(x)))
    };
    let nonempty = |list: &serde_json::Value| list.as_array().is_some_and(|l| !l.is_empty());
    let mut syscalls = Vec::new();
    for s in v["syscalls"].as_array().unwrap() {
        let (inc, exc) = (&s["includes"], &s["excludes"]);
        if has(&exc["arches"], arch) || caps.iter().any(|c| has(&exc["caps"], c)) {
            continue;
        }
        if nonempty(&inc["arches"]) && !has(&inc["arches"], arch) {
            continue;
        }
        if nonempty(&inc["caps"])
            && !inc["caps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| caps.contains(&c.as_str().unwrap()))
        {
            continue;
        }
        syscalls.push(json!({
            "names": s["names"], "action": s["action"], "errnoRet": s["errnoRet"], "args": s["args"]
        }));
    }
    let arch_map = v["archMap"].as_array().unwrap();
    let m = arch_map
        .iter()
        .find(|m| m["architecture"] == "SCMP_ARCH_X86_64")
        .unwrap();
    let mut arches = vec![m["architecture"].clone()];
    arches.extend(m["subArchitectures"].as_array().unwrap().iter().cloned());
    profile(json!({
        "defaultAction": v["defaultAction"],
        "defaultErrnoRet": v["defaultErrnoRet"],
        "architectures": arches,
        "syscalls": syscalls
    }))
}

const CONTAINERS_PROFILE: &str = "/usr/share/containers/seccomp.json";
/// The capabilities of `kapsel-runtime spec` (runc's default).
const SPEC_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

#[test]
fn containers_common_profile() {
    let Ok(text) = std::fs::read_to_string(CONTAINERS_PROFILE) else {
        eprintln!("{CONTAINERS_PROFILE} missing (Debian golang-github-containers-common): skipped");
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = from_containers_profile(&v, &SPEC_CAPS, "amd64");
    let start = std::time::Instant::now();
    let f = build(&p);
    let took = start.elapsed();
    let x = |name: &str, args: &[u64]| ret_of(&f, call(nr(Arch::X86_64, name), args));
    for allowed in [
        "read",
        "write",
        "openat",
        "execve",
        "clone",
        "clone3",
        "mkdir",
        "capset",
        "setresuid",
        "getpid",
    ] {
        assert_eq!(x(allowed, &[]), RET_ALLOW, "{allowed}");
    }
    // Listed unconditionally as well: the unconditional rule wins.
    assert_eq!(x("setns", &[]), RET_ALLOW);
    assert_eq!(x("sethostname", &[]), EPERM, "needs CAP_SYS_ADMIN");
    assert_eq!(x("chroot", &[]), EPERM, "needs CAP_SYS_CHROOT");
    assert_eq!(x("userfaultfd", &[]), EPERM);
    assert_eq!(x("add_key", &[]), ENOSYS, "not listed: the default");
    assert_eq!(x("personality", &[8]), RET_ALLOW);
    assert_eq!(x("personality", &[0x40008]), ENOSYS);
    // CAP_AUDIT_WRITE is granted: socket is allowed outright.
    assert_eq!(x("socket", &[16, 3, 9]), RET_ALLOW);
    assert_eq!(ret_of(&f, call(2000, &[])), ENOSYS);

    // Without CAP_AUDIT_WRITE, audit netlink sockets get EINVAL.
    let f2 = build(&from_containers_profile(&v, &["CAP_KILL"], "amd64"));
    let sock = nr(Arch::X86_64, "socket");
    assert_eq!(ret_of(&f2, call(sock, &[16, 3, 9])), RET_ERRNO | 22);
    assert_eq!(ret_of(&f2, call(sock, &[16, 3, 0])), RET_ALLOW);
    assert_eq!(ret_of(&f2, call(sock, &[2, 1, 0])), RET_ALLOW);

    // The i386 half of the same filter.
    let i386 = |name: &str| {
        ret_of(
            &f,
            Data {
                nr: nr(Arch::X86, name),
                arch: AUDIT_ARCH_I386,
                args: [0; 6],
            },
        )
    };
    assert_eq!(i386("socketcall"), RET_ALLOW);
    assert_eq!(i386("_llseek"), RET_ALLOW);
    assert_eq!(i386("sethostname"), EPERM);

    // Cost per syscall: instructions run for every x86_64 syscall number.
    let mut steps: Vec<usize> = (0..super::tables::X86_64.iter().map(|e| e.1).max().unwrap() + 1)
        .map(|n| run(&f.program, &call(n, &[])).1)
        .collect();
    steps.sort_unstable();
    let avg = steps.iter().sum::<usize>() as f64 / steps.len() as f64;
    eprintln!(
        "containers-common profile: {} rules -> {} instructions, compiled in {took:?}; \
         instructions run per x86_64 syscall: min {}, avg {avg:.1}, max {}",
        p.syscalls.len(),
        f.program.len(),
        steps[0],
        steps[steps.len() - 1]
    );
    assert!(
        steps[steps.len() - 1] <= 24,
        "a syscall costs at most a few dozen instructions"
    );
}

mod load {
    use super::*;
    use crate::process::message::{Channel, Message};
    use crate::syscall::fake::{Call, Recorder};
    use std::os::fd::AsRawFd;

    fn spec(seccomp: serde_json::Value, nnp: bool) -> crate::spec::Spec {
        serde_json::from_value(json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "noNewPrivileges": nnp,
                        "user": {"uid": 1000, "gid": 1000}},
            "linux": {"seccomp": seccomp}
        }))
        .unwrap()
    }

    fn position(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
        calls.iter().position(pred).expect("call made")
    }

    #[test]
    fn with_no_new_privs_the_filter_comes_last() {
        let s = spec(json!({"defaultAction": "SCMP_ACT_ALLOW"}), true);
        let k = Recorder::new();
        let (ours, _theirs) = Channel::pair().unwrap();
        crate::init::finalize_identity(&k, &s, s.process(), true, &ours).unwrap();
        let calls = k.take();
        assert!(matches!(
            calls.last(),
            Some(Call::SeccompFilter { flags: 0, .. })
        ));
        assert!(position(&calls, |c| *c == Call::NoNewPrivs) < calls.len() - 1);
    }

    #[test]
    fn without_no_new_privs_the_filter_comes_before_the_user_changes() {
        let s = spec(json!({"defaultAction": "SCMP_ACT_ALLOW"}), false);
        let k = Recorder::new();
        let (ours, _theirs) = Channel::pair().unwrap();
        crate::init::finalize_identity(&k, &s, s.process(), true, &ours).unwrap();
        let calls = k.take();
        let filter = position(&calls, |c| matches!(c, Call::SeccompFilter { .. }));
        assert!(filter < position(&calls, |c| matches!(c, Call::Setresuid(_))));
        assert!(filter < position(&calls, |c| matches!(c, Call::Capset(_))));
        assert!(!calls.contains(&Call::NoNewPrivs));
    }

    #[test]
    fn no_profile_no_filter() {
        let mut s = spec(json!(null), true);
        s.linux = None;
        let k = Recorder::new();
        let (ours, _theirs) = Channel::pair().unwrap();
        crate::init::finalize_identity(&k, &s, s.process(), true, &ours).unwrap();
        assert!(!k
            .take()
            .iter()
            .any(|c| matches!(c, Call::SeccompFilter { .. })));
    }

    #[test]
    fn the_listener_goes_to_the_parent() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
            "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let f = build(&p);
        let k = Recorder::new();
        // An old kernel: WAIT_KILLABLE_RECV is refused once, then loading goes on without it.
        k.fail_on(
            |c| matches!(c, Call::SeccompFilter { flags, .. } if flags & FLAG_WAIT_KILLABLE_RECV != 0),
            libc::EINVAL,
        );
        let (init, parent) = Channel::pair().unwrap();
        parent.send(&Message::SeccompListenerDone).unwrap();
        super::super::load(&k, &f, &init).unwrap();
        let calls = k.take();
        assert_eq!(
            calls,
            vec![
                Call::SeccompFilter {
                    len: f.program.len(),
                    flags: FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV
                },
                Call::SeccompFilter {
                    len: f.program.len(),
                    flags: FLAG_NEW_LISTENER
                },
            ]
        );
        assert!(matches!(parent.recv().unwrap(), Some(Message::SeccompListener(fd)) if fd > 2));
    }

    #[test]
    fn a_refused_filter_is_an_error() {
        let f = build(&profile(json!({"defaultAction": "SCMP_ACT_ALLOW"})));
        let k = Recorder::new();
        k.fail_on(|c| matches!(c, Call::SeccompFilter { .. }), libc::EACCES);
        let (init, _parent) = Channel::pair().unwrap();
        let e = super::super::load(&k, &f, &init).unwrap_err();
        assert!(
            e.to_string().starts_with("load the seccomp filter: "),
            "{e}"
        );
    }

    #[test]
    fn the_agent_gets_state_and_listener() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let agent = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let p = profile(
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
            "listenerMetadata": "hello"}),
        );
        let listener = std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let msg = super::super::notify::ContainerProcessState::new(
            &p,
            42,
            json!({"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 42}),
        );
        super::super::notify::send_to_agent(&path, &msg, &listener).unwrap();
        let (conn, _) = agent.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let got = recvmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let fds: Vec<_> = got
            .cmsgs()
            .unwrap()
            .filter_map(|c| match c {
                ControlMessageOwned::ScmRights(f) => Some(f),
                _ => None,
            })
            .flatten()
            .collect();
        let n = got.bytes;
        assert_eq!(fds.len(), 1);
        // SAFETY: the descriptor just arrived with the message and is ours to close.
        unsafe { libc::close(fds[0]) };
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(
            v,
            json!({"ociVersion": crate::spec::OCI_VERSION, "fds": ["seccompFd"], "pid": 42,
                   "metadata": "hello",
                   "state": {"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 42}})
        );
    }
}

#[test]
fn features_lists_what_is_supported() {
    let f = super::features();
    assert_eq!(f["enabled"], true);
    assert_eq!(f["actions"].as_array().unwrap().len(), 9);
    assert!(f["operators"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_CMP_MASKED_EQ")));
    assert_eq!(
        f["archs"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    assert!(f["supportedFlags"]
        .as_array()
        .unwrap()
        .contains(&json!("SECCOMP_FILTER_FLAG_TSYNC")));
}
