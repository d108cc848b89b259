//! Container logs in Docker's json-file format.
//!
//! One line per entry, `{"log":"...","stream":"stdout","time":"2026-11-29T10:00:00.123456789Z"}`,
//! in `<root>/containers/<id>/<id>-json.log`, rotated by size into `<file>.1` .. `<file>.N-1`
//! ([`writer`]). The writer is the `kapsel-logger` binary the shim starts for each container
//! through a `binary://` log URI ([`logger_uri`]); it holds an exclusive `flock` on
//! `<file>.lock` for its whole life, so [`wait_writer_done`] tells when every line of a finished
//! container is on disk. Readers ([`reader`]) walk the rotated files by inode, so following and
//! long-poll cursors survive rotation.
//!
//! Bytes: the entries carry the output byte for byte. A line longer than 16 KiB is cut into
//! 16 KiB entries (Docker's "partial" messages: no `\n` at the end of all but the last), output
//! that waits without a newline (a prompt) is flushed as a partial entry after a short pause,
//! and a line with bytes that are not UTF-8 has them as U+FFFD in `log` (as Docker) and exactly,
//! in base64, in an added `raw` field ([`json`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod json;
pub mod reader;
pub mod time;
pub mod writer;

pub use reader::{read, read_all, read_chunk, Cursor, Formatter, LogQuery};
pub use time::{format_rfc3339_nanos, now_nanos, parse_time, TimeError};
pub use writer::{LineBuffer, Writer, WriterOptions};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid log cursor {0:?}: expected <inode>:<offset>:<time> as a previous call returned"
    )]
    InvalidCursor(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Which output an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One json line: a whole output line with its `\n`, or a piece of one ([`Entry::partial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stream: Stream,
    /// Nanoseconds since the epoch (UTC) when the logger read it.
    pub time: i64,
    /// The output's bytes, exactly.
    pub log: Vec<u8>,
}

impl Entry {
    /// The line goes on in the next entry of the same stream (cut at 16 KiB, or flushed
    /// before its newline came).
    pub fn partial(&self) -> bool {
        self.log.last() != Some(&b'\n')
    }
}

/// `<logfile>.<n>`: the n-th newest rotated file.
pub fn rotated_path(logfile: &Path, n: u32) -> PathBuf {
    let mut s = logfile.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// `<logfile>.lock`: the writer holds an exclusive `flock` on it while it runs.
pub fn lock_path(logfile: &Path) -> PathBuf {
    let mut s = logfile.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// How often [`wait_writer_done`] tries the lock.
const LOCK_POLL: Duration = Duration::from_millis(10);

/// Wait until no writer holds `logfile`'s lock (every line of a finished container is then on
/// disk), at most `timeout`; true if so (also when no writer ever ran: no lock file).
pub fn wait_writer_done(logfile: &Path, timeout: Duration) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let deadline = Instant::now() + timeout;
    let lock = lock_path(logfile);
    loop {
        match File::open(&lock) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => return false,
            Ok(f) => match Flock::lock(f, FlockArg::LockSharedNonblock) {
                Ok(_) => return true,
                Err((_, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {}
                Err(_) => return false,
            },
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(LOCK_POLL.min(deadline - now));
    }
}

/// Remove a log, its rotated files and its lock file (a missing file is no error).
pub fn remove(logfile: &Path) -> Result<(), Error> {
    let rm = |p: &Path| match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", p, e)),
        _ => Ok(()),
    };
    for n in 1.. {
        let p = rotated_path(logfile, n);
        if !p.exists() {
            break;
        }
        rm(&p)?;
    }
    rm(logfile)?;
    rm(&lock_path(logfile))
}

/// `%`-escape what a URI query or path cannot hold as it is.
fn uri_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~:,+@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `binary://` log URI that makes the shim run `logger` (kapsel-logger) writing
/// `logfile`; `tty`: the container has a terminal (output is written as it comes, no waiting
/// for a newline).
pub fn logger_uri(logger: &Path, logfile: &Path, opts: WriterOptions, tty: bool) -> String {
    let mut uri = format!(
        "binary://{}?path={}",
        uri_escape(&logger.to_string_lossy()),
        uri_escape(&logfile.to_string_lossy())
    );
    if let Some(max) = opts.max_size {
        uri.push_str(&format!(
            "&max-size={max}&max-file={}",
            opts.max_files.max(1)
        ));
    }
    if tty {
        uri.push_str("&tty=true");
    }
    uri
}

/// A size as Docker's `max-size` takes it: bytes, or with `k`, `m`, `g` (1024-based, case and a
/// trailing `b`/`ib` ignored: `10m`, `512KiB`, `1g`).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0 && n.is_finite()).then_some((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests;
