//! Appending json lines to `<file>` and rotating it by size, as Docker's json-file driver does:
//! before a line that would take the file past `max_size`, `<file>.N-2` .. `<file>.1` move up one
//! (the oldest, `<file>.N-1`, is removed), `<file>` becomes `<file>.1` and a new `<file>` starts.
//! With `max_files == 1` the file is emptied instead. Lines go to an `O_APPEND` file in
//! `write(2)` calls of whole lines (one line, or the lines of one read), so a reader sees
//! whole lines in order, and a rotated file is complete.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{rotated_path, Error, Stream};

/// Docker splits lines longer than this into several entries ("partial" messages: every piece
/// but the last lacks the trailing `\n`).
pub const MAX_ENTRY: usize = 16 * 1024;

/// Size rotation. Docker's json-file defaults: no limit, one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Rotate before the file would grow past this many bytes (None: never).
    pub max_size: Option<u64>,
    /// How many files to keep, the current one included (at least 1).
    pub max_files: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_size: None,
            max_files: 1,
        }
    }
}

/// The writing end of one container's log.
pub struct Writer {
    path: PathBuf,
    opts: WriterOptions,
    file: File,
    /// Bytes in the file plus those in `pending`.
    size: u64,
    /// Encoded lines not written yet ([`Writer::append`]).
    pending: Vec<u8>,
}

/// [`Writer::append`] writes once this much is pending.
const PENDING_LIMIT: usize = 16 * 1024;

fn open_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("open for appending", path, e))
}

impl Writer {
    /// Open (or create) `path` for appending; lines already in it count towards `max_size`.
    pub fn open(path: &Path, opts: WriterOptions) -> Result<Writer, Error> {
        let file = open_append(path)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        Ok(Writer {
            path: path.to_path_buf(),
            opts: WriterOptions {
                max_files: opts.max_files.max(1),
                ..opts
            },
            file,
            size,
            pending: Vec::new(),
        })
    }

    /// Write one entry (a whole line, or a piece of one without `\n`), stamped `time`
    /// (nanoseconds since the epoch), rotating first if it would not fit.
    pub fn write(&mut self, stream: Stream, time: i64, log: &[u8]) -> Result<(), Error> {
        self.append(stream, time, log)?;
        self.flush()
    }

    /// Like [`Writer::write`], but the line may wait in memory until [`Writer::flush`] (or
    /// 16 KiB are pending): the lines of one read then take one `write(2)`, still whole lines.
    pub fn append(&mut self, stream: Stream, time: i64, log: &[u8]) -> Result<(), Error> {
        let before = self.pending.len();
        super::json::encode(&mut self.pending, log, stream, time);
        let len = (self.pending.len() - before) as u64;
        if let Some(max) = self.opts.max_size {
            if self.size > 0 && self.size + len > max {
                let written = self.file.write_all(&self.pending[..before]);
                self.pending.drain(..before);
                written.map_err(|e| Error::io("write", &self.path, e))?;
                self.rotate()?;
            }
        }
        self.size += len;
        if self.pending.len() >= PENDING_LIMIT {
            self.flush()?;
        }
        Ok(())
    }

    /// Write what [`Writer::append`] left pending (dropped if writing fails).
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.pending);
        self.pending.clear();
        // A burst leaves a large allocation: give it back.
        if self.pending.capacity() > 4 * PENDING_LIMIT {
            self.pending = Vec::new();
        }
        written.map_err(|e| Error::io("write", &self.path, e))
    }

    fn rotate(&mut self) -> Result<(), Error> {
        let n = self.opts.max_files;
        if n <= 1 {
            self.file
                .set_len(0)
                .map_err(|e| Error::io("truncate", &self.path, e))?;
            self.size = 0;
            return Ok(());
        }
        let oldest = rotated_path(&self.path, n - 1);
        match std::fs::remove_file(&oldest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &oldest, e))
            }
            _ => {}
        }
        for i in (1..n - 1).rev() {
            let from = rotated_path(&self.path, i);
            match std::fs::rename(&from, rotated_path(&self.path, i + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("rename", &from, e))
                }
                _ => {}
            }
        }
        let first = rotated_path(&self.path, 1);
        std::fs::rename(&self.path, &first).map_err(|e| Error::io("rename", &self.path, e))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// How many bytes at the end of `b` are the start of a UTF-8 character that is not complete
/// yet (kept for the next entry so that a split does not cut a character).
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xc0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let need = match c {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// One stream's bytes between reads: cut into entries at each `\n`, at [`MAX_ENTRY`] bytes, or
/// when the caller flushes (idle output such as a prompt, a terminal, the end of the stream).
pub struct LineBuffer {
    buf: Box<[u8]>,
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer {
            buf: vec![0; MAX_ENTRY].into_boxed_slice(),
            len: 0,
        }
    }
}

impl LineBuffer {
    /// Where the next read goes (never empty).
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Bytes held that are not an entry yet.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// `n` bytes were read into [`LineBuffer::spare`]: hand every complete line (and a full
    /// buffer's worth without a newline) to `emit`.
    pub fn filled<E>(
        &mut self,
        n: usize,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let old = self.len;
        self.len += n;
        let mut start = 0;
        let mut search = old;
        while let Some(pos) = self.buf[search..self.len].iter().position(|b| *b == b'\n') {
            let end = search + pos + 1;
            emit(&self.buf[start..end])?;
            start = end;
            search = end;
        }
        if start == 0 && self.len == self.buf.len() {
            let keep = incomplete_utf8_tail(&self.buf[..self.len]);
            emit(&self.buf[..self.len - keep])?;
            start = self.len - keep;
        }
        self.buf.copy_within(start..self.len, 0);
        self.len -= start;
        Ok(())
    }

    /// Hand what is held to `emit` as a partial entry; `end` (the stream ended) also gives up a
    /// cut character, which is otherwise kept for the next entry.
    pub fn flush<E>(
        &mut self,
        end: bool,
        emit: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let keep = if end {
            0
        } else {
            incomplete_utf8_tail(&self.buf[..self.len])
        };
        if self.len > keep {
            emit(&self.buf[..self.len - keep])?;
            self.buf.copy_within(self.len - keep..self.len, 0);
            self.len = keep;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::json;

    fn feed(lb: &mut LineBuffer, mut data: &[u8], out: &mut Vec<Vec<u8>>) {
        while !data.is_empty() {
            let spare = lb.spare();
            let n = spare.len().min(data.len());
            spare[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            lb.filled(n, |e| {
                out.push(e.to_vec());
                Ok::<(), ()>(())
            })
            .unwrap();
        }
    }

    #[test]
    fn lines_are_cut_at_newlines_and_16k_and_nothing_is_lost() {
        let mut lb = LineBuffer::default();
        let mut out = Vec::new();
        feed(&mut lb, b"one\ntw", &mut out);
        feed(&mut lb, b"o\n\nthr", &mut out);
        assert_eq!(
            out,
            vec![b"one\n".to_vec(), b"two\n".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(lb.pending(), 3);
        lb.flush(false, |e| {
            out.push(e.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(out.last().unwrap(), b"thr");
        out.clear();

        // 40000 bytes of one line: 16384 + 16384 + the rest with its newline.
        let long: Vec<u8> = (0..40_000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = long.clone();
        input.push(b'\n');
        feed(&mut lb, &input, &mut out);
        let lens: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![16_384, 16_384, 40_000 - 32_768 + 1]);
        assert_eq!(out.concat(), input);
        out.clear();

        // A character that straddles the 16 KiB cut goes whole into the next entry.
        let mut input = vec![b'x'; MAX_ENTRY - 1];
        input.extend_from_slice("€\n".as_bytes());
        feed(&mut lb, &input, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_ENTRY - 1);
        assert_eq!(out[1], "€\n".as_bytes());
    }

    #[test]
    fn utf8_tail_detection() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail(b"ab\xe2\x82"), 2);
        assert_eq!(incomplete_utf8_tail(b"ab\xe2\x82\xac"), 0);
        assert_eq!(incomplete_utf8_tail(b"\xf0\x9f\x98"), 3);
        assert_eq!(incomplete_utf8_tail(b"\xff"), 0);
        assert_eq!(incomplete_utf8_tail(b"\x80\x80\x80"), 0);
    }

    fn lines_of(path: &Path) -> Vec<String> {
        let text = std::fs::read(path).unwrap_or_default();
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8(json::decode(l).unwrap().log).unwrap())
            .collect()
    }

    #[test]
    fn rotation_keeps_max_files_and_never_exceeds_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let opts = WriterOptions {
            max_size: Some(400),
            max_files: 3,
        };
        let mut w = Writer::open(&path, opts).unwrap();
        // Batches of lines (append) and single lines (write), rotating inside a batch.
        for i in 0..40 {
            let line = format!("line {i:02}\n");
            if i % 7 < 5 {
                w.append(Stream::Stdout, i, line.as_bytes()).unwrap();
            } else {
                w.write(Stream::Stdout, i, line.as_bytes()).unwrap();
            }
        }
        w.flush().unwrap();
        for p in [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len > 0 && len <= 400, "{p:?}: {len}");
        }
        assert!(!rotated_path(&path, 3).exists());
        // Oldest first, contiguous, ending at the last line written.
        let all: Vec<String> = [rotated_path(&path, 2), rotated_path(&path, 1), path.clone()]
            .iter()
            .flat_map(|p| lines_of(p))
            .collect();
        let first: usize = all[0][5..7].parse().unwrap();
        let expect: Vec<String> = (first..40).map(|i| format!("line {i:02}\n")).collect();
        assert_eq!(all, expect);
        drop(w);

        // Reopened (a restarted container): appends, and counts what is there.
        let before = std::fs::metadata(&path).unwrap().len();
        let mut w = Writer::open(&path, opts).unwrap();
        w.write(Stream::Stderr, 99, b"again\n").unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after > before || before + 60 > 400);
        assert_eq!(lines_of(&path).last().unwrap(), "again\n");
    }

    #[test]
    fn one_file_is_emptied_instead_of_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let opts = WriterOptions {
            max_size: Some(300),
            max_files: 1,
        };
        let mut w = Writer::open(&path, opts).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, i, format!("l{i}\n").as_bytes())
                .unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 300);
        assert!(!rotated_path(&path, 1).exists());
        assert_eq!(lines_of(&path).last().unwrap(), "l19\n");
    }
}
