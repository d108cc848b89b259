//! Keeping an idle shim small. Most of a fresh shim's resident set is clean program text that the
//! kernel faulted in 64 KiB at a time ("fault-around"), of libc above all. `trim` drops those
//! page-table entries (the pages stay in the page cache, shared) and asks for single-page faults
//! from then on, so the shim keeps resident only the code it actually runs while idle.

use std::sync::atomic::{AtomicBool, Ordering};

static ACTIVITY: AtomicBool = AtomicBool::new(false);

/// Note that a call ran (what it faulted in is worth trimming once idle).
pub fn note_activity() {
    ACTIVITY.store(true, Ordering::Relaxed);
}

/// Whether a call ran since the last time this was asked.
pub fn take_activity() -> bool {
    ACTIVITY.swap(false, Ordering::Relaxed)
}

/// One executable, file-backed mapping of this process.
#[derive(Debug, PartialEq, Eq)]
struct TextMapping {
    start: usize,
    end: usize,
}

/// Executable file mappings (`r-xp` with a path) from `/proc/self/smaps` text, that hold no
/// page of their own (`Anonymous: 0 kB`: never written, e.g. by a debugger's breakpoint). Only
/// these are trimmed: dropping them loses nothing (a relocated `r--p` page would be lost).
fn text_mappings(smaps: &str) -> Vec<TextMapping> {
    let mut out = Vec::new();
    let mut current: Option<TextMapping> = None;
    let mut clean = true;
    let finish = |m: Option<TextMapping>, clean: bool, out: &mut Vec<TextMapping>| {
        if let (Some(m), true) = (m, clean) {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
            {
                finish(current.take(), clean, &mut out);
                clean = true;
                let perms = f.next().unwrap_or_default();
                let path = f.nth(3).unwrap_or_default();
                if perms == "r-xp" && path.starts_with('/') {
                    current = Some(TextMapping { start, end });
                }
                continue;
            }
        }
        if first == "Anonymous:" && f.next() != Some("0") {
            clean = false;
        }
    }
    finish(current, clean, &mut out);
    out
}

/// Drop resident program text and switch it to single-page faults. Best effort.
pub fn trim() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for m in text_mappings(&smaps) {
        let addr = m.start as *mut libc::c_void;
        let len = m.end - m.start;
        // SAFETY: the range is a whole private, read-only, executable file mapping of this
        // process, as listed by the kernel, with no anonymous (written) page; MADV_RANDOM only
        // changes fault-ahead, and MADV_DONTNEED on such a mapping only drops page-table entries
        // (the next access re-reads the same bytes from the file): no memory changes meaning.
        unsafe {
            libc::madvise(addr, len, libc::MADV_RANDOM);
            libc::madvise(addr, len, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_only_executable_file_mappings() {
        let maps = "\
55d0a0000000-55d0a0010000 r--p 00000000 08:01 123 /usr/bin/x
Rss:                  64 kB
Anonymous:             0 kB
55d0a0010000-55d0a0050000 r-xp 00010000 08:01 123 /usr/bin/x
Rss:                 128 kB
Anonymous:             0 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Anonymous:            12 kB
7f1000000000-7f1000100000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
7f2000000000-7f2000001000 r-xp 00000000 08:01 789 /usr/lib/patched.so
Anonymous:             4 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            text_mappings(maps),
            vec![
                TextMapping {
                    start: 0x55d0a0010000,
                    end: 0x55d0a0050000
                },
                TextMapping {
                    start: 0x7f1000000000,
                    end: 0x7f1000100000
                },
            ]
        );
    }

    #[test]
    fn trim_keeps_the_process_working() {
        trim();
        // Code and data still work after the text was dropped.
        let v: Vec<u32> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u32>(), 499_500);
    }
}
