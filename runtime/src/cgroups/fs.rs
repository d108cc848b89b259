//! Reading and writing cgroupfs control files, naming the file (and the value) in every error.
//!
//! Control files are never created: writing to a file that does not exist is an error, because on
//! cgroupfs a missing file means the kernel or the hierarchy lacks that knob.

use super::CgroupError;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Writes `value` to the existing control file `dir/file` in a single write, as cgroupfs expects
/// (O_TRUNC, as a shell's `>` does: meaningless to cgroupfs, but a plain file in a test ends up
/// holding exactly the value).
pub(super) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path,
            value: value.to_string(),
            source,
        })
}

/// Reads `dir/file`; `None` when it does not exist.
pub(super) fn read_optional(dir: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// Reads `dir/file`, which must exist.
pub(super) fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

pub(super) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// Parses a single number as cgroup files print it; "max" (v2's "no limit") is `u64::MAX`.
pub(super) fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

/// Reads a single-number file; `None` when it does not exist or does not hold a number.
pub(super) fn read_u64_optional(dir: &Path, file: &str) -> Result<Option<u64>, CgroupError> {
    Ok(read_optional(dir, file)?.and_then(|t| parse_u64(&t)))
}

/// The `key value` pairs of a flat-keyed file (memory.stat, cpu.stat, memory.events, ...);
/// lines that are not of that shape are skipped.
pub(super) fn flat_keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let key = fields.next()?;
        let value = parse_u64(fields.next()?)?;
        fields.next().is_none().then_some((key, value))
    })
}

/// The value of `key` in the flat-keyed file `dir/file`; `None` when the file or key is absent.
pub(super) fn keyed_value(dir: &Path, file: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    Ok(read_optional(dir, file)?.and_then(|text| {
        flat_keyed(&text)
            .find(|(k, _)| *k == key)
            .map(|(_, value)| value)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_names_file_and_value_and_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path(), "memory.limit_in_bytes", "64m").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot write \"64m\" to {}/memory.limit_in_bytes: ",
                dir.path().display()
            )),
            "{msg}"
        );
        assert!(!dir.path().join("memory.limit_in_bytes").exists());
    }

    #[test]
    fn numbers_and_flat_keyed_files() {
        assert_eq!(parse_u64("max\n"), Some(u64::MAX));
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64("x"), None);
        let pairs: Vec<_> = flat_keyed("a 1\nbad\nb 2 3\nc max\n").collect();
        assert_eq!(pairs, vec![("a", 1), ("c", u64::MAX)]);
    }
}
