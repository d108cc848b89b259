//! Reading a log and its rotated files, oldest first, while a writer may be appending and
//! rotating.
//!
//! A [`Cursor`] names a file by its inode and a byte offset in it, not by its name: the name of
//! a file changes at each rotation (`<file>` → `<file>.1` → `<file>.2`), its inode does not.
//! Since a removed file's inode is soon reused by a new one, the cursor also holds the time of
//! the file's first entry, which never changes. To go on, the reader lists `<file>` and
//! `<file>.N` in one `readdir`, finds the cursor's file and reads from there to the newest file.
//! A cursor whose file was rotated away and removed meanwhile (or emptied, with one file kept)
//! goes on at the oldest file still there (those lines are gone, as with Docker).
//! Only complete lines are consumed: a line being written stays for the next call.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{json, Entry, Error, Stream};

/// How often a follower looks for new lines.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What `kapsel logs` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines of the log (all streams counted, as Docker does), then the filters.
    pub tail: Option<usize>,
    /// Only entries at or after this time (nanoseconds since the epoch).
    pub since: Option<i64>,
    /// Only entries at or before this time; a follower stops at the first entry after it.
    pub until: Option<i64>,
    /// Prefix each line with its RFC 3339 time ([`Formatter`]).
    pub timestamps: bool,
    /// Keep reading new lines until told to stop.
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl Default for LogQuery {
    /// Everything, both streams, no follow.
    fn default() -> Self {
        LogQuery {
            tail: None,
            since: None,
            until: None,
            timestamps: false,
            follow: false,
            stdout: true,
            stderr: true,
        }
    }
}

impl LogQuery {
    /// Whether `e` passes the stream and time filters.
    pub fn matches(&self, e: &Entry) -> bool {
        let stream = match e.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        stream && self.since.is_none_or(|s| e.time >= s) && !self.past_until(e)
    }

    /// Whether `e` is later than `until` (a follower stops there).
    pub fn past_until(&self, e: &Entry) -> bool {
        self.until.is_some_and(|u| e.time > u)
    }
}

/// A position in a log that survives rotation; [`Cursor::default`] is the start of the oldest
/// file. It is plain data: kapseld can hand it to a client as a token and take it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Inode of the file (0: the oldest file, whichever it is).
    ino: u64,
    offset: u64,
    /// The time of the file's first entry, once read (0: not known).
    first: i64,
}

impl Cursor {
    /// The start of the oldest file.
    pub fn start() -> Cursor {
        Cursor::default()
    }

    /// `<inode>:<offset>:<first>`, for an API message.
    pub fn to_token(&self) -> String {
        format!("{}:{}:{}", self.ino, self.offset, self.first)
    }

    /// The inverse of [`Cursor::to_token`]; the empty token is [`Cursor::start`].
    pub fn from_token(token: &str) -> Result<Cursor, Error> {
        if token.is_empty() {
            return Ok(Cursor::start());
        }
        let bad = || Error::InvalidCursor(token.to_string());
        let mut f = token.splitn(3, ':');
        let mut field = || f.next().ok_or_else(bad);
        let (ino, offset, first) = (field()?, field()?, field()?);
        Ok(Cursor {
            ino: ino.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
            first: first.parse().map_err(|_| bad())?,
        })
    }

    /// Just after the last complete line now in the log (what `attach` and `--tail 0` start
    /// from); the start if there is no log yet.
    pub fn end(logfile: &Path) -> Result<Cursor, Error> {
        Cursor::tail(logfile, 0)
    }

    /// At the start of the `n`-th last line (all streams), or the start of the oldest file if
    /// there are fewer.
    pub fn tail(logfile: &Path, n: usize) -> Result<Cursor, Error> {
        let files = chain(logfile)?;
        let mut want = n;
        for f in files.iter().rev() {
            let Some(file) = open_verified(f)? else {
                // Rotated while we looked: start over from a fresh listing.
                return Cursor::tail(logfile, n);
            };
            match start_of_last_lines(&file, &f.path, want)? {
                Found::At(offset) => {
                    return Ok(Cursor {
                        ino: f.ino,
                        offset,
                        first: if offset == 0 { 0 } else { first_time(&file) },
                    })
                }
                Found::Fewer(lines) => want -= lines,
            }
        }
        Ok(Cursor::start())
    }

    /// Where a read for `query` starts: its `tail`, else the start.
    pub fn seek(logfile: &Path, query: &LogQuery) -> Result<Cursor, Error> {
        match query.tail {
            Some(n) => Cursor::tail(logfile, n),
            None => Ok(Cursor::start()),
        }
    }
}

/// One file of the log: its path now and its inode.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    ino: u64,
}

/// `<file>.N` .. `<file>.1`, `<file>`: oldest first, as they are named at the time of the
/// `readdir`. A missing directory or log is an empty list.
fn chain(logfile: &Path) -> Result<Vec<LogFile>, Error> {
    let dir = match logfile.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = logfile
        .file_name()
        .ok_or_else(|| Error::io("read", logfile, std::io::ErrorKind::InvalidInput.into()))?
        .as_encoded_bytes();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let file_name = entry.file_name();
        let n = file_name.as_encoded_bytes();
        let Some(rest) = n.strip_prefix(name) else {
            continue;
        };
        let index = if rest.is_empty() {
            0
        } else {
            match rest
                .strip_prefix(b".")
                .and_then(|d| std::str::from_utf8(d).ok())
            {
                Some(d) if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => {
                    match d.parse::<u64>() {
                        Ok(i) => i,
                        Err(_) => continue,
                    }
                }
                _ => continue,
            }
        };
        files.push((
            index,
            LogFile {
                path: entry.path(),
                ino: entry.ino(),
            },
        ));
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(files.into_iter().map(|(_, f)| f).collect())
}

/// `f` opened, if it is still the file listed (else it was rotated or removed since).
fn open_verified(f: &LogFile) -> Result<Option<File>, Error> {
    let file = match File::open(&f.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &f.path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("stat", &f.path, e))?;
    Ok((meta.ino() == f.ino).then_some(file))
}

/// The time of the first entry of `file` (0 if it has no complete first line).
fn first_time(file: &File) -> i64 {
    let mut line = Vec::new();
    let mut block = [0u8; 4096];
    // A json line holds at most 16 KiB of output, escaped up to six bytes a byte.
    while line.len() < 128 * 1024 {
        let n = match file.read_at(&mut block, line.len() as u64) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => n,
        };
        if let Some(pos) = block[..n].iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&block[..pos]);
            return json::decode(&line).map_or(0, |l| l.time);
        }
        line.extend_from_slice(&block[..n]);
    }
    0
}

enum Found {
    At(u64),
    Fewer(usize),
}

/// Scan `file` backwards for the start of its `n`-th last complete line (a line still being
/// written, without its `\n`, does not count).
fn start_of_last_lines(file: &File, path: &Path, n: usize) -> Result<Found, Error> {
    const BLOCK: u64 = 64 * 1024;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut buf = vec![0u8; BLOCK.min(len) as usize];
    let mut pos = len;
    // Whether the `\n` of the last complete line was found; then how many before it.
    let mut end_found = false;
    let mut before = 0usize;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let chunk = &mut buf[..(pos - start) as usize];
        file.read_exact_at(chunk, start)
            .map_err(|e| Error::io("read", path, e))?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b != b'\n' {
                continue;
            }
            let after = start + i as u64 + 1;
            if !end_found {
                end_found = true;
                if n == 0 {
                    return Ok(Found::At(after));
                }
                continue;
            }
            before += 1;
            if before == n {
                return Ok(Found::At(after));
            }
        }
        pos = start;
    }
    let lines = if end_found { before + 1 } else { 0 };
    Ok(if lines >= n {
        Found::At(0)
    } else {
        Found::Fewer(lines)
    })
}

/// Append what is available after `cursor` (at least one entry if there is one, then up to
/// about `max_bytes` of log bytes) to `out`; moves the cursor past it.
fn read_available(
    logfile: &Path,
    cursor: &mut Cursor,
    max_bytes: usize,
    out: &mut Vec<Entry>,
) -> Result<(), Error> {
    let mut used = 0usize;
    'listing: for _ in 0..8 {
        let files = chain(logfile)?;
        if files.is_empty() {
            return Ok(());
        }
        let found = files.iter().position(|f| f.ino == cursor.ino);
        let mut i = found.unwrap_or(0);
        if found.is_none() {
            *cursor = Cursor {
                ino: files[0].ino,
                ..Cursor::default()
            };
        }
        loop {
            let f = &files[i];
            let Some(mut file) = open_verified(f)? else {
                continue 'listing;
            };
            let len = file
                .metadata()
                .map_err(|e| Error::io("stat", &f.path, e))?
                .len();
            if cursor.offset > 0 && (len < cursor.offset || first_time(&file) != cursor.first) {
                // Not the file the cursor was in (its inode was reused after it was removed),
                // or emptied (one file kept): go on at the oldest file.
                if i != 0 {
                    i = 0;
                    *cursor = Cursor {
                        ino: files[0].ino,
                        ..Cursor::default()
                    };
                    continue;
                }
                cursor.offset = 0;
                cursor.first = 0;
            }
            file.seek(SeekFrom::Start(cursor.offset))
                .map_err(|e| Error::io("seek", &f.path, e))?;
            let mut lines = BufReader::with_capacity(64 * 1024, file);
            let mut line = Vec::new();
            loop {
                if used >= max_bytes && !out.is_empty() {
                    return Ok(());
                }
                line.clear();
                let n = lines
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Error::io("read", &f.path, e))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break; // the end, or a line not written completely yet
                }
                let at_start = cursor.offset == 0;
                cursor.offset += n as u64;
                if let Ok(l) = json::decode(&line) {
                    if at_start {
                        cursor.first = l.time;
                    }
                    used += l.log.len();
                    out.push(Entry {
                        stream: l.stream,
                        time: l.time,
                        log: l.log,
                    });
                }
            }
            if i + 1 == files.len() {
                return Ok(());
            }
            // A rotated file is complete: go on with the next newer one.
            i += 1;
            *cursor = Cursor {
                ino: files[i].ino,
                ..Cursor::default()
            };
        }
    }
    Ok(())
}

/// Entries after `cursor` (about `max_bytes` of log bytes, at least one if any), moving the
/// cursor past them; when there are none yet, wait up to `wait` for some. For long-poll
/// serving: an empty result after `wait` means nothing new (the caller decides whether the log
/// is finished: container exited and [`super::wait_writer_done`]).
pub fn read_chunk(
    logfile: &Path,
    cursor: &mut Cursor,
    max_bytes: usize,
    wait: Duration,
) -> Result<Vec<Entry>, Error> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    loop {
        read_available(logfile, cursor, max_bytes, &mut out)?;
        let now = Instant::now();
        if !out.is_empty() || now >= deadline {
            return Ok(out);
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Read the log as `query` says, handing matching entries to `sink` (which returns false to
/// stop). With `follow`, keeps reading new lines across rotations until `sink` stops, an entry
/// is past `until`, or `stop()` returns true (call it "the container exited and the writer is
/// done"): what was written before that is still delivered.
pub fn read(
    logfile: &Path,
    query: &LogQuery,
    stop: &dyn Fn() -> bool,
    mut sink: impl FnMut(Entry) -> bool,
) -> Result<(), Error> {
    let mut cursor = Cursor::seek(logfile, query)?;
    loop {
        // Asked before reading, so that lines written before the stop are read.
        let last = !query.follow || stop();
        let entries = read_chunk(logfile, &mut cursor, 1 << 20, Duration::ZERO)?;
        if entries.is_empty() {
            if last {
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        for e in entries {
            if query.past_until(&e) {
                return Ok(());
            }
            if query.matches(&e) && !sink(e) {
                return Ok(());
            }
        }
    }
}

/// Every entry now in the log, oldest first (`logs` without options).
pub fn read_all(logfile: &Path) -> Result<Vec<Entry>, Error> {
    let mut all = Vec::new();
    read(logfile, &LogQuery::default(), &|| true, |e| {
        all.push(e);
        true
    })?;
    Ok(all)
}

/// Writes entries as `docker logs` prints them: the bytes as they were, with `timestamps` the
/// entry's time and a space at the start of each line (a line cut into several entries gets one
/// time stamp, its first).
#[derive(Debug, Default)]
pub struct Formatter {
    pub timestamps: bool,
    /// Per stream: the last entry ended in the middle of a line.
    mid_line: [bool; 2],
}

impl Formatter {
    pub fn new(timestamps: bool) -> Formatter {
        Formatter {
            timestamps,
            mid_line: [false; 2],
        }
    }

    /// Append `e` to `out`.
    pub fn format(&mut self, e: &Entry, out: &mut Vec<u8>) {
        let i = e.stream as usize;
        if self.timestamps && !self.mid_line[i] {
            let mut t = String::with_capacity(31);
            super::time::write_rfc3339_nanos(&mut t, e.time);
            t.push(' ');
            out.extend_from_slice(t.as_bytes());
        }
        out.extend_from_slice(&e.log);
        self.mid_line[i] = e.partial();
    }
}
