//! kapsel-logger: writes one container's stdout and stderr as Docker json-file lines.
//!
//! containerd's logging-binary contract, as `containerd-shim-kapsel-v2` runs it for a
//! `binary://PATH?path=LOG&max-size=N&max-file=N&tty=true` log URI: the query pairs come as
//! arguments (`path LOG max-size N ...`), the container's stdout is fd 3 and its stderr fd 4,
//! and closing fd 5 says "ready"; `CONTAINER_ID` and `CONTAINER_NAMESPACE` are in the
//! environment. It runs until both streams end (the container and its shim copiers closed
//! them), holding `LOG.lock` (see `kapsel_manager::logs::wait_writer_done`).
//!
//! One thread, one `poll` loop, two 16 KiB line buffers: a few hundred KiB of RSS per container.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kapsel_manager::logs::{self, now_nanos, LineBuffer, Stream, Writer, WriterOptions};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Output without a newline (a prompt) is written as a partial entry after this pause.
const PARTIAL_AFTER: Duration = Duration::from_millis(100);
/// How long to wait for a previous logger of the same file (a restarted container) to finish.
const LOCK_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Args {
    path: PathBuf,
    opts: WriterOptions,
    tty: bool,
}

const USAGE: &str = "usage: kapsel-logger path LOGFILE [max-size SIZE] [max-file N] [tty true]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut path, mut opts, mut tty) = (None, WriterOptions::default(), false);
    while let Some(arg) = it.next() {
        let arg = arg.trim_start_matches('-').to_string();
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let mut value = |k: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{k} needs a value; {USAGE}"))
        };
        match key.as_str() {
            "path" => path = Some(PathBuf::from(value("path")?)),
            "max-size" => {
                let v = value("max-size")?;
                let n = logs::parse_size(&v)
                    .ok_or(format!("max-size {v:?}: expected bytes or 10k, 10m, 1g"))?;
                opts.max_size = (n > 0).then_some(n);
            }
            "max-file" => {
                let v = value("max-file")?;
                opts.max_files = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(format!("max-file {v:?}: expected a number, at least 1"))?;
            }
            // `tty` alone (a URI key without a value) or `tty true|false`.
            "tty" => {
                tty = match inline.as_deref() {
                    Some(v) => v != "false" && v != "0",
                    None => true,
                };
            }
            "true" | "1" if tty => {}
            "false" | "0" if tty => tty = false,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let path = path.ok_or(format!("no log file given; {USAGE}"))?;
    Ok(Args { path, opts, tty })
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// fd `fd` if this process has it open (the shim passes 3, 4 and 5).
fn inherited(fd: i32) -> Option<File> {
    // SAFETY: F_GETFD only reads the descriptor's flags; it has no effect on any fd.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    // SAFETY: the fd is open (checked above), was handed to this process by the shim for its
    // own use, and nothing else in this process owns or closes it.
    open.then(|| unsafe { File::from_raw_fd(fd) })
}

struct Input {
    stream: Stream,
    file: Option<File>,
    buf: LineBuffer,
    /// Since when bytes without a newline wait in `buf`.
    waiting: Option<Instant>,
}

/// What one read gave.
enum Got {
    Data,
    /// Nothing now (EINTR, EAGAIN).
    Again,
    End,
}

struct Output {
    writer: Writer,
    /// Write errors are not fatal: the pipes must keep draining or the container blocks.
    failed: u64,
}

impl Output {
    fn emit(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), std::convert::Infallible> {
        let r = self.writer.append(stream, now_nanos(), bytes);
        self.note(r);
        Ok(())
    }

    /// Write what the last reads gave (one `write(2)` for all their lines).
    fn flush(&mut self) {
        let r = self.writer.flush();
        self.note(r);
    }

    fn note(&mut self, r: Result<(), logs::Error>) {
        if let Err(e) = r {
            if self.failed == 0 {
                eprintln!("kapsel-logger: {e} (lines are dropped until writing works again)");
            }
            self.failed += 1;
        }
    }
}

impl Input {
    /// One read.
    fn read(&mut self, out: &mut Output, tty: bool) -> Got {
        let Some(file) = self.file.as_mut() else {
            return Got::End;
        };
        let stream = self.stream;
        match file.read(self.buf.spare()) {
            Ok(0) => {
                self.end(out);
                return Got::End;
            }
            Ok(n) => {
                let _ = self.buf.filled(n, |b| out.emit(stream, b));
                if tty {
                    let _ = self.buf.flush(false, |b| out.emit(stream, b));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Got::Again,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Got::Again,
            Err(e) => {
                eprintln!("kapsel-logger: read {}: {e}", stream.as_str());
                self.end(out);
                return Got::End;
            }
        }
        if self.buf.pending() == 0 {
            self.waiting = None;
        } else if self.waiting.is_none() {
            self.waiting = Some(Instant::now());
        }
        Got::Data
    }

    fn end(&mut self, out: &mut Output) {
        let stream = self.stream;
        let _ = self.buf.flush(true, |b| out.emit(stream, b));
        self.file = None;
        self.waiting = None;
    }

    /// After SIGTERM: what the pipe holds now, then the end.
    fn drain(&mut self, out: &mut Output) {
        if let Some(f) = &self.file {
            let _ = nix::fcntl::fcntl(
                f,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
        }
        // Until EAGAIN (nothing more for now) or the end.
        while let Got::Data = self.read(out, false) {}
        self.end(out);
    }
}

fn run(args: Args) -> Result<(), String> {
    let (stdout, stderr, ready) = (inherited(3), inherited(4), inherited(5));
    if let Some(dir) = args.path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let lock_path = logs::lock_path(&args.path);
    let mut lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    let deadline = Instant::now() + LOCK_LIMIT;
    let _lock = loop {
        match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                lock = f;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, e)) => {
                return Err(format!(
                    "lock {}: {e} (another kapsel-logger still writes this log)",
                    lock_path.display()
                ))
            }
        }
    };
    let writer = Writer::open(&args.path, args.opts).map_err(|e| e.to_string())?;
    let mut out = Output { writer, failed: 0 };

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe. No SA_RESTART:
    // poll returns EINTR so that the loop sees the flag.
    unsafe {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_terminate),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        for sig in [nix::sys::signal::SIGTERM, nix::sys::signal::SIGINT] {
            nix::sys::signal::sigaction(sig, &action).map_err(|e| format!("sigaction: {e}"))?;
        }
    }
    // Ready: the log is open and locked.
    drop(ready);

    let mut inputs =
        [(Stream::Stdout, stdout), (Stream::Stderr, stderr)].map(|(stream, f)| Input {
            stream,
            file: f,
            buf: LineBuffer::default(),
            waiting: None,
        });
    loop {
        if TERMINATE.load(Ordering::SeqCst) {
            for input in &mut inputs {
                input.drain(&mut out);
            }
            break;
        }
        let now = Instant::now();
        for input in &mut inputs {
            if input.waiting.is_some_and(|t| now >= t + PARTIAL_AFTER) {
                let stream = input.stream;
                let _ = input.buf.flush(false, |b| out.emit(stream, b));
                // A cut character (at most 3 bytes) may stay: it goes with the next read.
                input.waiting = None;
            }
        }
        out.flush();
        let open: Vec<usize> = (0..2).filter(|i| inputs[*i].file.is_some()).collect();
        if open.is_empty() {
            break;
        }
        let timeout =
            inputs
                .iter()
                .filter_map(|i| i.waiting)
                .min()
                .map_or(PollTimeout::NONE, |t| {
                    let left = (t + PARTIAL_AFTER).saturating_duration_since(now);
                    PollTimeout::try_from(left.as_millis() as i32 + 1).unwrap_or(PollTimeout::MAX)
                });
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd> = open
                .iter()
                .filter_map(|i| inputs[*i].file.as_ref())
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            open.iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| *i)
                .collect()
        };
        for i in ready {
            inputs[i].read(&mut out, args.tty);
        }
        out.flush();
    }
    out.flush();
    if out.failed > 0 {
        return Err(format!("{} entries could not be written", out.failed));
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kapsel-logger: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments_as_the_shim_passes_uri_pairs() {
        let a = parse(&["path", "/x/c-json.log", "max-size", "10m", "max-file", "3"]).unwrap();
        assert_eq!(a.path, PathBuf::from("/x/c-json.log"));
        assert_eq!(a.opts.max_size, Some(10 << 20));
        assert_eq!(a.opts.max_files, 3);
        assert!(!a.tty);
        assert!(parse(&["path", "/l", "tty", "true"]).unwrap().tty);
        assert!(parse(&["path", "/l", "tty"]).unwrap().tty);
        assert!(!parse(&["tty", "false", "path", "/l"]).unwrap().tty);
        assert!(parse(&["--path=/l", "--tty"]).unwrap().tty);
        assert!(parse(&["max-size", "1k"])
            .unwrap_err()
            .contains("no log file"));
        assert!(parse(&["path", "/l", "max-file", "0"])
            .unwrap_err()
            .contains("max-file"));
        assert!(parse(&["path", "/l", "colour", "red"])
            .unwrap_err()
            .contains("unknown argument \"colour\""));
        assert!(parse(&["path"]).unwrap_err().contains("needs a value"));
    }
}
