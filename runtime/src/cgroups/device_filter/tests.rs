//! The generated programs run in a small interpreter of the instructions they use, and every
//! decision is compared with a direct evaluation of the rule list; installation runs against
//! the recording fake.

use super::*;
use crate::cgroups::devices;
use crate::spec::DeviceCgroup;
use crate::syscall::bpf::{Attached, BpfCall, FakeBpf};

// ------------------------------------------------------------------ interpreter

/// Checks what the verifier checks structurally: every jump lands inside the program and goes
/// forward, the last instruction is an exit, and every instruction is reachable.
fn check_cfg(prog: &[BpfInsn]) {
    assert!(!prog.is_empty());
    assert_eq!(prog.last().unwrap().code, JMP_EXIT, "must end in exit");
    let mut reached = vec![false; prog.len()];
    reached[0] = true;
    for (pc, i) in prog.iter().enumerate() {
        if !reached[pc] {
            panic!("unreachable instruction {pc}: {i:?}\n{prog:#?}");
        }
        let is_jump = matches!(i.code, JMP_JEQ_K | JMP_JNE_K | JMP_JNE_X);
        if is_jump {
            assert!(i.off >= 0, "backward jump at {pc}");
            let target = pc + 1 + i.off as usize;
            assert!(target < prog.len(), "jump out of the program at {pc}");
            reached[target] = true;
        }
        if i.code != JMP_EXIT {
            assert!(pc + 1 < prog.len(), "falls off the end at {pc}");
            reached[pc + 1] = true;
        }
    }
}

/// Runs `prog` on a bpf_cgroup_dev_ctx; panics on any instruction the generator must not emit,
/// on a read of an unset register and on a write to the context pointer.
fn run(prog: &[BpfInsn], access_type: u32, major: u32, minor: u32) -> u64 {
    let ctx = [access_type, major, minor];
    let mut r = [0u64; 11];
    let mut set = [false; 11];
    set[1] = true;
    let mut pc = 0usize;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps <= prog.len(), "loop in the program");
        let i = prog[pc];
        pc += 1;
        let (d, s) = (usize::from(i.dst()), usize::from(i.src()));
        let imm64 = i64::from(i.imm) as u64;
        let read = |reg: usize| {
            assert!(set[reg], "r{reg} read before it was set at {}", pc - 1);
            assert_ne!(reg, 1, "the context pointer used as a number at {}", pc - 1);
            r[reg]
        };
        let jump = |taken: bool| if taken { i.off as usize } else { 0 };
        match i.code {
            LDX_W_MEM => {
                assert_eq!(s, 1, "loads only from the context");
                assert!(matches!(i.off, 0 | 4 | 8), "context offset {}", i.off);
                r[d] = u64::from(ctx[i.off as usize / 4]);
            }
            ALU64_MOV_X => r[d] = read(s),
            ALU64_MOV_K => r[d] = imm64,
            ALU_MOV_K => r[d] = u64::from(i.imm as u32),
            ALU64_AND_K => r[d] = read(d) & imm64,
            ALU64_RSH_K => r[d] = read(d) >> i.imm,
            JMP_JEQ_K => pc += jump(read(d) == imm64),
            JMP_JNE_K => pc += jump(read(d) != imm64),
            JMP_JNE_X => pc += jump(read(d) != read(s)),
            JMP_EXIT => return read(0),
            code => panic!("unexpected opcode {code:#x} at {}", pc - 1),
        }
        assert_ne!(d, 1, "the context pointer overwritten at {}", pc - 1);
        set[d] = true;
    }
}

// ------------------------------------------------------------------ reference

fn type_matches(rule: &Rule, typ: u32) -> bool {
    match rule.typ {
        'a' => true,
        'b' => typ == DEV_BLOCK,
        'c' => typ == DEV_CHAR,
        _ => unreachable!(),
    }
}

fn number_matches(rule: Option<i64>, n: u32) -> bool {
    rule.is_none_or(|r| r == i64::from(n))
}

fn access_bit(c: char) -> u32 {
    match c {
        'm' => ACC_MKNOD,
        'r' => ACC_READ,
        'w' => ACC_WRITE,
        _ => unreachable!(),
    }
}

/// Every access the request asks for is decided by the last rule that matches the device and
/// names that access; undecided is denied, and so is a request for nothing.
fn reference(rules: &[Rule], typ: u32, major: u32, minor: u32, access: u32) -> bool {
    if access == 0 {
        return false;
    }
    (0..16)
        .map(|b| 1u32 << b)
        .filter(|b| access & b != 0)
        .all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| {
                    type_matches(r, typ)
                        && number_matches(r.major, major)
                        && number_matches(r.minor, minor)
                        && r.access.chars().any(|c| access_bit(c) == bit)
                })
                .is_some_and(|r| r.allow)
        })
}

const TYPES: [u32; 4] = [0, DEV_BLOCK, DEV_CHAR, 3];
const MAJORS: [u32; 10] = [0, 1, 5, 8, 10, 136, 254, 4095, 0x8000_0001, u32::MAX];
const MINORS: [u32; 12] = [0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 229, 0x8000_0001];

/// The program for `rules` (the list as given, no defaults appended) agrees with the reference
/// on every combination of the values above and every access value 0..=8; returns how many
/// requests were allowed.
fn agree(rules: &[Rule]) -> usize {
    let prog = program(rules);
    check_cfg(&prog);
    let mut allowed = 0;
    for typ in TYPES {
        for major in MAJORS {
            for minor in MINORS {
                for access in 0..=8u32 {
                    let got = run(&prog, (access << 16) | typ, major, minor);
                    let want = reference(rules, typ, major, minor, access);
                    assert_eq!(
                        got,
                        u64::from(want),
                        "type {typ} {major}:{minor} access {access:#b}\nrules: {:?}\nprogram: {prog:#?}",
                        rules.iter().map(|r| format!("{} {}", r.file(), r.line())).collect::<Vec<_>>()
                    );
                    allowed += usize::from(want);
                }
            }
        }
    }
    allowed
}

fn spec_rule(allow: bool, typ: &str, major: i64, minor: i64, access: &str) -> DeviceCgroup {
    DeviceCgroup {
        allow,
        typ: Some(typ.to_string()),
        major: Some(major),
        minor: Some(minor),
        access: Some(access.to_string()),
    }
}

fn parsed(spec: &[DeviceCgroup]) -> Vec<Rule> {
    devices::rules(spec).unwrap()
}

/// What docker (and `kapsel-runtime spec`) put in linux.resources.devices.
fn docker_default() -> Vec<DeviceCgroup> {
    vec![
        DeviceCgroup {
            allow: false,
            typ: None,
            major: None,
            minor: None,
            access: Some("rwm".into()),
        },
        spec_rule(true, "c", 1, 3, "rwm"),
        spec_rule(true, "c", 1, 5, "rwm"),
        spec_rule(true, "c", 1, 7, "rwm"),
        spec_rule(true, "c", 5, 0, "rwm"),
        spec_rule(true, "c", 1, 9, "rwm"),
        spec_rule(true, "c", 1, 8, "rwm"),
        spec_rule(true, "c", 136, -1, "rwm"),
        spec_rule(true, "c", 5, 2, "rwm"),
        spec_rule(true, "c", -1, -1, "m"),
        spec_rule(true, "b", -1, -1, "m"),
    ]
}

/// The decision of the program for `rules` on one request given as "c 1:3 rw".
fn decide(rules: &[Rule], request: &str) -> bool {
    let (typ, rest) = request.split_once(' ').unwrap();
    let (dev, access) = rest.split_once(' ').unwrap();
    let (major, minor) = dev.split_once(':').unwrap();
    let typ = if typ == "b" { DEV_BLOCK } else { DEV_CHAR };
    let access = access.chars().map(access_bit).fold(0, |a, b| a | b);
    run(
        &program(rules),
        (access << 16) | typ,
        major.parse().unwrap(),
        minor.parse().unwrap(),
    ) == 1
}

// ------------------------------------------------------------------ programs

#[test]
fn docker_default_rules() {
    let rules = parsed(&docker_default());
    agree(&rules);
    for allowed in [
        "c 1:3 rw",
        "c 1:3 rwm",
        "c 1:5 r",
        "c 1:7 w",
        "c 1:8 r",
        "c 1:9 r",
        "c 5:0 rw",
        "c 5:2 rw",
        "c 136:0 rw",
        "c 136:4095 w",
        "c 10:200 rw",
        "c 1:1 m",
        "c 1:11 m",
        "b 8:0 m",
        "b 254:1 m",
    ] {
        assert!(decide(&rules, allowed), "{allowed} must be allowed");
    }
    for denied in [
        "c 1:1 r",
        "c 1:1 w",
        "c 1:11 w",
        "c 1:11 rw",
        "c 1:2 r",
        "c 5:1 rw",
        "c 4:0 r",
        "c 10:229 rw",
        "b 8:0 r",
        "b 8:0 w",
        "b 8:0 rm",
        "c 1:11 rm",
        "b 7:0 rw",
    ] {
        assert!(!decide(&rules, denied), "{denied} must be denied");
    }
}

#[test]
fn the_spec_default_alone_and_allow_all() {
    // `kapsel-runtime spec`: deny everything; the runtime adds runc's allowances.
    let deny_all = parsed(&docker_default()[..1]);
    assert!(agree(&deny_all) > 0);
    assert!(decide(&deny_all, "c 1:3 rw") && !decide(&deny_all, "c 1:1 r"));
    // Privileged: allow everything, no defaults appended, nothing denied.
    let all = parsed(&[DeviceCgroup {
        allow: true,
        typ: Some("a".into()),
        major: None,
        minor: None,
        access: Some("rwm".into()),
    }]);
    assert_eq!(all.len(), 1);
    agree(&all);
    assert!(decide(&all, "b 8:0 rw") && decide(&all, "c 1:1 rwm"));
    // No rules at all: only the defaults.
    let none = parsed(&[]);
    agree(&none);
    assert!(decide(&none, "c 1:3 rw") && !decide(&none, "c 1:1 r"));
}

#[test]
fn last_matching_rule_wins_per_access() {
    let rules = |spec: &[DeviceCgroup]| -> Vec<Rule> {
        spec.iter()
            .map(|d| devices::parse(std::slice::from_ref(d)).unwrap()[0].clone())
            .collect()
    };
    // A hole punched into a wildcard allowance is enforced.
    let holes = rules(&[
        spec_rule(true, "c", -1, -1, "rwm"),
        spec_rule(false, "c", 1, 3, "w"),
    ]);
    assert_eq!(holes.len(), 2);
    agree(&holes);
    assert!(decide(&holes, "c 1:3 r") && !decide(&holes, "c 1:3 w") && !decide(&holes, "c 1:3 rw"));
    assert!(decide(&holes, "c 1:4 rw"));
    // Access is decided bit by bit: read from one rule, write from another.
    let split = rules(&[
        spec_rule(true, "c", 1, -1, "r"),
        spec_rule(true, "c", -1, 3, "w"),
    ]);
    agree(&split);
    assert!(decide(&split, "c 1:3 rw") && !decide(&split, "c 1:4 rw") && decide(&split, "c 1:4 r"));
    // A later allowance overrides an earlier deny, a later deny an earlier allowance.
    let order = rules(&[
        spec_rule(false, "c", 1, 3, "rwm"),
        spec_rule(true, "c", 1, 3, "r"),
        spec_rule(true, "c", 1, 5, "rw"),
        spec_rule(false, "c", 1, 5, "r"),
    ]);
    agree(&order);
    assert!(decide(&order, "c 1:3 r") && !decide(&order, "c 1:3 rw"));
    assert!(decide(&order, "c 1:5 w") && !decide(&order, "c 1:5 r"));
}

#[test]
fn unconditional_deny_ends_the_program() {
    // Everything before the last "deny all" is dead: the program stops there.
    let spec = [
        spec_rule(true, "c", 1, 3, "rwm"),
        DeviceCgroup {
            allow: false,
            typ: Some("a".into()),
            major: Some(-1),
            minor: None,
            access: None,
        },
        spec_rule(true, "c", 1, 5, "r"),
    ];
    let rules: Vec<Rule> = spec
        .iter()
        .map(|d| devices::parse(std::slice::from_ref(d)).unwrap()[0].clone())
        .collect();
    let prog = program(&rules);
    check_cfg(&prog);
    agree(&rules);
    assert!(!decide(&rules, "c 1:3 r"));
    assert!(decide(&rules, "c 1:5 r"));
    let short = program(&rules[1..]);
    assert_eq!(prog, short, "the rule before the deny-all adds nothing");
}

#[test]
fn numbers_beyond_31_bits_and_impossible_rules() {
    let spec = [
        spec_rule(true, "c", 0x8000_0001, 0x8000_0001, "rw"),
        spec_rule(true, "b", 4095, i64::from(u32::MAX), "r"),
        // Cannot match any device: beyond 32 bits.
        spec_rule(true, "c", 1 << 33, 3, "rwm"),
    ];
    let rules: Vec<Rule> = spec
        .iter()
        .map(|d| devices::parse(std::slice::from_ref(d)).unwrap()[0].clone())
        .collect();
    agree(&rules);
    assert!(decide(&rules, "c 2147483649:2147483649 rw"));
    assert!(!decide(&rules, "c 1:3 r"));
}

/// xorshift64*: reproducible pseudo-random rule lists without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

#[test]
fn random_rule_lists_agree_with_the_reference() {
    let mut rng = Rng(0x6b61_7073_656c_2176);
    let numbers = |rng: &mut Rng, pool: &[u32]| -> i64 {
        match rng.next() % 5 {
            0 => -1,
            1 => 1 << 32,
            _ => i64::from(rng.pick(pool)),
        }
    };
    for _ in 0..120 {
        let len = (rng.next() % 12) as usize;
        let mut spec = Vec::new();
        for _ in 0..len {
            let access: String = "rwm"
                .chars()
                .filter(|_| rng.next().is_multiple_of(2))
                .collect();
            spec.push(DeviceCgroup {
                allow: !rng.next().is_multiple_of(3),
                typ: Some(rng.pick(&["a", "b", "c", "c"]).to_string()),
                major: Some(numbers(&mut rng, &MAJORS[..6])),
                minor: Some(numbers(&mut rng, &MINORS[..9])),
                access: Some(if access.is_empty() {
                    "rwm".into()
                } else {
                    access
                }),
            });
        }
        // With and without the defaults appended.
        agree(&parsed(&spec));
        let raw: Vec<Rule> = spec
            .iter()
            .map(|d| devices::parse(std::slice::from_ref(d)).unwrap()[0].clone())
            .collect();
        agree(&raw);
    }
}

// ------------------------------------------------------------------ installation

fn install_default(bpf: &FakeBpf, dir: &Path) {
    install(bpf, dir, &parsed(&docker_default())).unwrap();
}

#[test]
fn install_attaches_one_program_and_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let bpf = FakeBpf::new();
    install_default(&bpf, dir.path());
    let len = program(&parsed(&docker_default())).len();
    assert_eq!(
        bpf.take(),
        vec![
            BpfCall::Load {
                insns: len,
                name: PROG_NAME.into()
            },
            BpfCall::Query,
            BpfCall::Attach {
                prog: 1,
                flags: BPF_F_ALLOW_MULTI,
                replace: None
            },
        ]
    );
    // Again (update): the new program takes the old one's place in one step.
    install_default(&bpf, dir.path());
    assert_eq!(
        bpf.take()[1..],
        [
            BpfCall::Query,
            BpfCall::FdById(1),
            BpfCall::Attach {
                prog: 2,
                flags: BPF_F_ALLOW_MULTI | BPF_F_REPLACE,
                replace: Some(1)
            },
        ]
    );
    assert_eq!(bpf.attached.borrow().ids, vec![2]);
}

#[test]
fn install_without_replace_attaches_then_detaches_all_old() {
    let dir = tempfile::tempdir().unwrap();
    let bpf = FakeBpf::without_replace();
    // Two programs stacked already (by an older runtime, say).
    for _ in 0..2 {
        let fd = bpf.load_cgroup_device(&program(&[]), "old").unwrap();
        let cg = std::fs::File::open(dir.path()).unwrap();
        bpf.attach_cgroup_device(cg.as_fd(), fd.as_fd(), BPF_F_ALLOW_MULTI, None)
            .unwrap();
    }
    assert_eq!(bpf.attached.borrow().ids, vec![1, 2]);
    bpf.take();
    install_default(&bpf, dir.path());
    let calls = bpf.take();
    assert_eq!(
        calls[1..],
        [
            BpfCall::Query,
            BpfCall::FdById(1),
            BpfCall::FdById(2),
            BpfCall::Attach {
                prog: 3,
                flags: BPF_F_ALLOW_MULTI | BPF_F_REPLACE,
                replace: Some(1)
            },
            BpfCall::Attach {
                prog: 3,
                flags: BPF_F_ALLOW_MULTI,
                replace: None
            },
            BpfCall::Detach { prog: 1 },
            BpfCall::Detach { prog: 2 },
        ]
    );
    assert_eq!(bpf.attached.borrow().ids, vec![3]);
}

#[test]
fn install_over_an_exclusive_program_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let bpf = FakeBpf::new();
    let fd = bpf.load_cgroup_device(&program(&[]), "systemd").unwrap();
    let cg = std::fs::File::open(dir.path()).unwrap();
    bpf.attach_cgroup_device(cg.as_fd(), fd.as_fd(), 0, None)
        .unwrap();
    bpf.take();
    install_default(&bpf, dir.path());
    assert_eq!(
        bpf.take().last(),
        Some(&BpfCall::Attach {
            prog: 2,
            flags: 0,
            replace: None
        })
    );
    assert_eq!(
        *bpf.attached.borrow(),
        Attached {
            flags: 0,
            ids: vec![2]
        }
    );
}

#[test]
fn a_refused_program_is_an_error_with_the_verifier_log() {
    let dir = tempfile::tempdir().unwrap();
    let bpf = FakeBpf::refusing_load(
        libc::EINVAL,
        "0: (61) r2 = *(u32 *)(r1 +0)\nunreachable insn 9",
    );
    let err = install(&bpf, dir.path(), &parsed(&docker_default())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("Invalid argument"), "{text}");
    assert!(text.contains("unreachable insn 9"), "{text}");
    assert_eq!(bpf.take().len(), 1, "nothing attached after a refused load");
}

// ------------------------------------------------------------------ the real kernel

/// The cgroup2 mount of this host (pure v2, or the "unified" one of a hybrid v1 host).
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let target = left.split(' ').nth(4)?;
        (right.split(' ').next() == Some("cgroup2")).then(|| std::path::PathBuf::from(target))
    })
}

/// Runs `script` with sh in the cgroup `dir`; its stdout.
fn sh_in(dir: &Path, script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs || exit 99; {script}",
            dir.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// As root with a cgroup2 mount (the integration job runs it with `--ignored`): the kernel's
/// verifier accepts the programs, they decide opens the way the rules say, and installing
/// again replaces the program instead of stacking another.
#[test]
#[ignore = "needs root and a cgroup2 mount"]
fn real_kernel_enforces_the_rules() {
    let Some(mount) = cgroup2_mount() else {
        panic!("no cgroup2 mount in /proc/self/mountinfo");
    };
    let dir = mount.join(format!("kapsel-device-filter-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let outcome = std::panic::catch_unwind(|| {
        let bpf = crate::syscall::linux::Linux;
        let attached = || {
            let cg = std::fs::File::open(&dir).unwrap();
            bpf.query_cgroup_device(cg.as_fd()).unwrap()
        };
        // open() of each node for reading or writing: "ok" or the error.
        let probe = "for t in 'r /dev/null' 'w /dev/null' 'r /dev/zero' 'r /dev/mem' 'r /dev/kmsg' 'w /dev/kmsg'; do \
             set -- $t; if [ $1 = r ]; then (exec 3<$2) 2>/dev/null; else (exec 3>$2) 2>/dev/null; fi \
             && echo \"$1 $2 ok\" || echo \"$1 $2 denied\"; done";
        install(&bpf, &dir, &parsed(&docker_default())).unwrap();
        assert_eq!(attached().ids.len(), 1);
        assert_eq!(attached().flags, BPF_F_ALLOW_MULTI);
        let first = attached().ids[0];
        assert_eq!(
            sh_in(&dir, probe),
            "r /dev/null ok\nw /dev/null ok\nr /dev/zero ok\nr /dev/mem denied\n\
             r /dev/kmsg denied\nw /dev/kmsg denied\n"
        );
        // /dev/kmsg readable only: the new program replaces the old one.
        let mut spec = docker_default();
        spec.push(spec_rule(true, "c", 1, 11, "r"));
        install(&bpf, &dir, &parsed(&spec)).unwrap();
        let now = attached();
        assert_eq!(now.ids.len(), 1, "{now:?}");
        assert_ne!(now.ids[0], first);
        assert_eq!(
            sh_in(&dir, probe),
            "r /dev/null ok\nw /dev/null ok\nr /dev/zero ok\nr /dev/mem denied\n\
             r /dev/kmsg ok\nw /dev/kmsg denied\n"
        );
        // mknod is checked too. First the positive control: the Docker list (it ends with runc's
        // "c *:* m") lets mknod through, so a refusal below is the filter's and not, say, a
        // read-only /tmp. Then a rule list without "m" refuses it with EPERM.
        let node =
            std::env::temp_dir().join(format!("kapsel-device-filter-{}", std::process::id()));
        let try_mknod = format!(
            "mknod {0} c 1 3 2>&1 && echo made; rm -f {0}",
            node.display()
        );
        install(&bpf, &dir, &parsed(&docker_default())).unwrap();
        assert_eq!(sh_in(&dir, &try_mknod), "made\n");
        let no_mknod = devices::parse(&[spec_rule(true, "c", -1, -1, "rw")]).unwrap()[..1].to_vec();
        install(&bpf, &dir, &no_mknod).unwrap();
        let out = sh_in(&dir, &try_mknod);
        assert!(
            out.contains("Operation not permitted") && !out.contains("made"),
            "mknod under a filter without 'm': {out:?}"
        );
        assert_eq!(attached().ids.len(), 1);
    });
    // The programs go with the cgroup.
    let removed = std::fs::remove_dir(&dir);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    removed.unwrap();
}
