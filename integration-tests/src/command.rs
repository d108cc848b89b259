//! Running host programs with a deadline and capturing what they print.
//!
//! stdout and stderr go to anonymous temporary files, not pipes: a container
//! started by `create` or `run -d` inherits the runtime's stdio and may keep
//! it open long after the runtime has exited, which would make a pipe reader
//! wait forever. With files we read whatever was written once the program we
//! started is gone.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single command may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code, when the program exited normally.
    pub code: Option<i32>,
    /// Signal number, when the program was killed by a signal.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    fn from_status(cmdline: String, status: ExitStatus, stdout: String, stderr: String) -> Self {
        CmdOutput {
            cmdline,
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code; panics (with the whole output) when the program was killed by a signal.
    pub fn exit_code(&self) -> i32 {
        match self.code {
            Some(code) => code,
            None => panic!("expected an exit code, got a signal:\n{self}"),
        }
    }

    /// Panics with the whole output unless the command succeeded.
    #[track_caller]
    pub fn assert_ok(self) -> Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panics with the whole output unless the command failed (exited non-zero).
    #[track_caller]
    pub fn assert_err(self) -> Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "command should have failed with a non-zero exit code:\n{self}"
        );
        self
    }

    /// stdout and stderr together, for checks that do not care which one.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.cmdline)?;
        match (self.code, self.signal) {
            (Some(code), _) => writeln!(f, "  exit code: {code}")?,
            (None, Some(sig)) => writeln!(f, "  killed by signal {sig}")?,
            _ => writeln!(f, "  no exit status")?,
        }
        writeln!(f, "  stdout: {:?}", self.stdout)?;
        write!(f, "  stderr: {:?}", self.stderr)
    }
}

/// A command to run on the host: `Command` plus stdin bytes, a deadline,
/// extra file descriptors to hand down, and output captured in files.
#[derive(Debug)]
pub struct Cmd {
    command: Command,
    cmdline: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    /// (source fd in this process, fd number in the child)
    fds: Vec<(RawFd, RawFd)>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Cmd {
            command: Command::new(program),
            cmdline: shell_quote(&program.to_string_lossy()),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
            fds: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.cmdline.push(' ');
        self.cmdline.push_str(&shell_quote(&arg.to_string_lossy()));
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Bytes the program reads on stdin (default: /dev/null).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Make `source` (an fd of this process, which must stay open until the
    /// child is spawned) appear as fd `target` in the child, without close-on-exec.
    pub fn pass_fd(mut self, source: RawFd, target: RawFd) -> Self {
        self.fds.push((source, target));
        self
    }

    /// The command line, shell-quoted, for messages.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Start the program; [`Running::wait`] collects it.
    pub fn spawn(mut self) -> Running {
        let stdout = tempfile::tempfile().expect("create a temp file for stdout");
        let stderr = tempfile::tempfile().expect("create a temp file for stderr");
        let stdin = match &self.stdin {
            None => Stdio::null(),
            Some(bytes) => {
                let mut f = tempfile::tempfile().expect("create a temp file for stdin");
                f.write_all(bytes).expect("write stdin file");
                f.seek(SeekFrom::Start(0)).expect("rewind stdin file");
                Stdio::from(f)
            }
        };
        self.command
            .stdin(stdin)
            .stdout(stdout.try_clone().expect("dup stdout file"))
            .stderr(stderr.try_clone().expect("dup stderr file"));
        if !self.fds.is_empty() {
            let fds = self.fds.clone();
            // SAFETY: the closure runs in the forked child before exec and only
            // calls dup2 and fcntl, which are async-signal-safe; it does not
            // allocate or touch locks.
            unsafe {
                self.command.pre_exec(move || {
                    for &(source, target) in &fds {
                        if source == target {
                            let flags = libc::fcntl(target, libc::F_GETFD);
                            if flags < 0
                                || libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                            {
                                return Err(std::io::Error::last_os_error());
                            }
                        } else if libc::dup2(source, target) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let child = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.cmdline));
        Running {
            child,
            cmdline: self.cmdline,
            stdout,
            stderr,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
        }
    }

    /// Run to completion (panics if the deadline passes; the program is killed first).
    pub fn output(self) -> CmdOutput {
        self.spawn().wait()
    }

    /// Run to completion; a passed deadline is an `Err` instead of a panic.
    pub fn output_result(self) -> Result<CmdOutput, String> {
        self.spawn().wait_result()
    }

    /// Run and panic with the whole output unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> CmdOutput {
        let caller = std::panic::Location::caller();
        let out = self.output();
        assert!(out.success(), "command failed (called at {caller}):\n{out}");
        out
    }

    /// Run and panic with the whole output unless it failed.
    #[track_caller]
    pub fn fails(self) -> CmdOutput {
        let caller = std::panic::Location::caller();
        let out = self.output();
        assert!(
            out.code.is_some_and(|c| c != 0),
            "command should have failed (called at {caller}):\n{out}"
        );
        out
    }
}

/// A program started by [`Cmd::spawn`].
#[derive(Debug)]
pub struct Running {
    child: Child,
    cmdline: String,
    stdout: File,
    stderr: File,
    deadline: Instant,
    timeout: Duration,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has the program exited? (Does not reap it.)
    pub fn try_finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait for the program; panics (after killing it) when its deadline passes.
    pub fn wait(self) -> CmdOutput {
        self.wait_result().unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// Wait for the program; when its deadline passes, kill it and return a
    /// description instead of panicking (for cleanup code in `Drop`).
    pub fn wait_result(mut self) -> Result<CmdOutput, String> {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= self.deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stdout = read_all(&mut self.stdout);
                    let stderr = read_all(&mut self.stderr);
                    return Err(format!(
                        "command did not finish within {:?} and was killed:\n  command: {}\n  stdout so far: {stdout:?}\n  stderr so far: {stderr:?}",
                        self.timeout, self.cmdline
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("waiting for `{}`: {e}", self.cmdline)),
            }
        };
        let stdout = read_all(&mut self.stdout);
        let stderr = read_all(&mut self.stderr);
        Ok(CmdOutput::from_status(self.cmdline, status, stdout, stderr))
    }
}

fn read_all(f: &mut File) -> String {
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("rewind output file");
    f.read_to_end(&mut buf).expect("read output file");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Quote `s` for a shell when it needs it (messages only).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run a host program with arguments; returns the output whatever happened.
pub fn host(program: &str, args: &[&str]) -> CmdOutput {
    Cmd::new(program).args(args).output()
}

/// Run a host program; panics with the output unless it succeeded.
#[track_caller]
pub fn host_ok(program: &str, args: &[&str]) -> CmdOutput {
    let caller = std::panic::Location::caller();
    let out = host(program, args);
    assert!(
        out.success(),
        "host command failed (called at {caller}):\n{out}"
    );
    out
}

/// Run a shell snippet on the host with /bin/sh.
pub fn host_sh(script: &str) -> CmdOutput {
    host("/bin/sh", &["-c", script])
}
