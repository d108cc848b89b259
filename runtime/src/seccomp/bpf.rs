//! Classic BPF as seccomp uses it, and a builder that lays a program out back to front.
//!
//! BPF jumps only go forward, and a conditional jump reaches at most 255 instructions. The
//! builder therefore prepends: every jump target already exists when a jump to it is written,
//! so its distance is known. A target that is too far for `jt`/`jf` gets a trampoline right
//! after the jump: a fresh copy of the `ret` when the target is one, a `ja` (32-bit offset)
//! otherwise.

use std::collections::HashMap;

/// One instruction: `struct sock_filter` of `<linux/filter.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Instruction classes, sizes, modes and operations (`<linux/bpf_common.h>`).
pub const LD: u16 = 0x00;
pub const ALU: u16 = 0x04;
pub const JMP: u16 = 0x05;
pub const RET: u16 = 0x06;
pub const W: u16 = 0x00;
pub const ABS: u16 = 0x20;
pub const K: u16 = 0x00;
pub const AND: u16 = 0x50;
pub const JA: u16 = 0x00;
pub const JEQ: u16 = 0x10;
pub const JGT: u16 = 0x20;
pub const JGE: u16 = 0x30;
/// Not emitted; the test interpreter knows it.
#[cfg(test)]
pub const JSET: u16 = 0x40;

/// The kernel refuses longer programs (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// Byte offsets in `struct seccomp_data`.
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
/// Offset of the low 32 bits of argument `i` (little-endian); the high half follows at +4.
pub const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

/// A position in the program counted from its end (the last instruction is 0), so that a
/// label stays valid while instructions are prepended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

#[derive(Debug, Default)]
pub struct Builder {
    /// The program so far, last instruction first.
    rev: Vec<SockFilter>,
    /// The nearest `ret` of each value, to share them.
    rets: HashMap<u32, Label>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The program in execution order, starting at `entry`, which must be the instruction
    /// written last.
    pub fn finish(mut self, entry: Label) -> Vec<SockFilter> {
        assert_eq!(
            entry,
            self.head(),
            "the entry point must be the first instruction"
        );
        self.rev.reverse();
        self.rev
    }

    /// The instruction written last (the one that will run before all others so far).
    fn head(&self) -> Label {
        Label(self.rev.len().wrapping_sub(1))
    }

    fn push(&mut self, insn: SockFilter) -> Label {
        self.rev.push(insn);
        self.head()
    }

    /// How many instructions a jump written now has to skip to land on `to`.
    fn skip(&self, to: Label) -> usize {
        self.rev.len() - 1 - to.0
    }

    fn is_ret(&self, l: Label) -> bool {
        self.rev[l.0].code == RET | K
    }

    /// `return k`.
    pub fn ret(&mut self, k: u32) -> Label {
        if let Some(&l) = self.rets.get(&k) {
            return l;
        }
        self.new_ret(k)
    }

    fn new_ret(&mut self, k: u32) -> Label {
        let l = self.push(SockFilter {
            code: RET | K,
            jt: 0,
            jf: 0,
            k,
        });
        self.rets.insert(k, l);
        l
    }

    /// A label right at the head that leads to `to`: `to` itself when it is the head,
    /// otherwise a copy of its `ret` or an unconditional jump to it.
    fn trampoline(&mut self, to: Label) -> Label {
        if to == self.head() {
            return to;
        }
        if self.is_ret(to) {
            let k = self.rev[to.0].k;
            return self.new_ret(k);
        }
        let skip = self.skip(to);
        self.push(SockFilter {
            code: JMP | JA,
            jt: 0,
            jf: 0,
            k: skip as u32,
        })
    }

    /// Writes `insn`, which falls through to the next instruction, followed by `next`.
    fn then(&mut self, insn: SockFilter, next: Label) -> Label {
        self.trampoline(next);
        self.push(insn)
    }

    /// `A = seccomp_data[off]` (32 bits), then go on at `next`.
    pub fn load(&mut self, off: u32, next: Label) -> Label {
        let insn = SockFilter {
            code: LD | W | ABS,
            jt: 0,
            jf: 0,
            k: off,
        };
        self.then(insn, next)
    }

    /// `A &= k`, then go on at `next`.
    pub fn and(&mut self, k: u32, next: Label) -> Label {
        let insn = SockFilter {
            code: ALU | AND | K,
            jt: 0,
            jf: 0,
            k,
        };
        self.then(insn, next)
    }

    /// `if (A op k) goto t else goto f`, with `op` one of JEQ, JGT, JGE, JSET. A test whose
    /// branches meet is left out.
    pub fn jump(&mut self, op: u16, k: u32, t: Label, f: Label) -> Label {
        if t == f {
            return t;
        }
        let (mut t, mut f) = (t, f);
        // A trampoline for one target moves the other one a step further away, so check both
        // again until they fit.
        loop {
            let (st, sf) = (self.skip(t), self.skip(f));
            if st <= usize::from(u8::MAX) && sf <= usize::from(u8::MAX) {
                return self.push(SockFilter {
                    code: JMP | op | K,
                    jt: st as u8,
                    jf: sf as u8,
                    k,
                });
            }
            if st > usize::from(u8::MAX) {
                t = self.trampoline(t);
            } else {
                f = self.trampoline(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_targets_get_trampolines() {
        let mut b = Builder::new();
        let far = b.ret(1);
        // Something that is not a ret, far away.
        let ld = b.load(OFF_NR, far);
        for i in 0..300 {
            b.ret(100 + i);
        }
        let near = b.ret(2);
        let j = b.jump(JEQ, 7, ld, near);
        let j2 = b.jump(JEQ, 8, far, j);
        let prog = b.finish(j2);
        // j2: far ret gets a copy of the ret right behind it.
        assert_eq!(prog[0].code, JMP | JEQ | K);
        assert_eq!(prog[1 + prog[0].jt as usize].k, 1);
        assert_eq!(prog[1 + prog[0].jt as usize].code, RET | K);
        // j: the load is reached through a ja.
        let j_at = 1 + prog[0].jf as usize;
        let via = j_at + 1 + prog[j_at].jt as usize;
        assert_eq!(prog[via].code, JMP | JA);
        let target = via + 1 + prog[via].k as usize;
        assert_eq!(prog[target].code, LD | W | ABS);
    }
}
