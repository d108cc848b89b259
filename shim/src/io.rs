//! Container stdio: containerd hands us FIFO paths; the container gets pipes, and one small thread
//! per stream copies between them. `Copiers::wait` tells when the container's output is drained,
//! so an exit is reported only after the output it printed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::stat::Mode;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::reaper::Reaper;
use crate::runtime::ChildIo;

/// The FIFO paths of one process (empty = not wanted).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Counts running output copiers; holds the stop switch of the stdin copier.
#[derive(Debug, Clone, Default)]
pub struct Copiers {
    running: Arc<(Mutex<usize>, Condvar)>,
    stdin_stop: Arc<Mutex<Option<OwnedFd>>>,
}

impl Copiers {
    /// End the stdin copier (the process is gone: nobody will read what the client sends).
    pub fn stop_stdin(&self) {
        self.stdin_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    fn begin(&self) {
        *self.running.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn end(&self) {
        let mut n = self.running.0.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.running.1.notify_all();
    }

    /// Wait until all output is copied, at most `limit` (a daemon can hold stdout open forever).
    pub fn wait(&self, limit: Duration) {
        let g = self.running.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .running
            .1
            .wait_timeout_while(g, limit, |n| *n > 0)
            .map(drop);
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// Open an output FIFO for writing without waiting for a reader (O_RDWR never blocks on a FIFO).
fn open_output(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn spawn_copy(
    name: &str,
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    done: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            drop(to);
            done();
        })?;
    Ok(())
}

/// Copy the client's stdin FIFO into the container until the client closes it (EOF: the
/// container's stdin closes too) or `stop` is closed (CloseIO, or the process exited); then
/// what is already in the FIFO is still forwarded. The FIFO is non-blocking: opening it must
/// not wait for a client that may never come.
fn copy_stdin(mut fifo: File, mut to: File, stop: OwnedFd) {
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].any().unwrap_or(true) {
            drain(&mut fifo, &mut to, &mut buf);
            return;
        }
        let ready = fds[0].revents().unwrap_or(PollFlags::empty());
        if ready.is_empty() {
            continue;
        }
        match fifo.read(&mut buf) {
            // A writer connected and left: end of input.
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Forward what the non-blocking `fifo` holds now.
fn drain(fifo: &mut File, to: &mut File, buf: &mut [u8]) {
    loop {
        match fifo.read(buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Whose output it is (a logging binary's environment names it) and who reaps the logger.
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    pub reaper: &'a Reaper,
}

/// How long a logging binary may take to say it is ready (close its fd 5).
const LOGGER_READY_LIMIT: Duration = Duration::from_secs(10);

/// `%XX` escapes of a URI part decoded (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `binary://PATH?k=v&...` log URI: the program and its arguments (`k v ...`, as
/// containerd's runc shim passes them).
fn logger_command(uri: &str) -> Option<(String, Vec<String>)> {
    let rest = uri.strip_prefix("binary://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut args = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        args.push(percent_decode(k));
        if !v.is_empty() {
            args.push(percent_decode(v));
        }
    }
    Some((percent_decode(path), args))
}

/// Start the logging binary of `uri` with the read ends of the container's stdout and stderr
/// as its fds 3 and 4 and a pipe to close when ready as fd 5 (containerd's logging contract);
/// returns the write ends. The reaper collects it when it exits after the container.
fn spawn_logger(uri: &str, owner: Owner<'_>) -> std::io::Result<(File, File)> {
    use std::os::unix::process::CommandExt;
    let (program, args) = logger_command(uri)
        .ok_or_else(|| std::io::Error::other(format!("{uri:?} is not a binary:// URI")))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args)
        .env("CONTAINER_ID", owner.id)
        .env("CONTAINER_NAMESPACE", owner.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    crate::reaper::unblock_signals_in_child(&mut cmd);
    // SAFETY: runs in the forked child before exec; fcntl and dup2 are async-signal-safe and
    // the closure touches no memory but the copied fd numbers. Duplicating above 9 first keeps
    // a source that already is 3, 4 or 5 from being overwritten before it is used.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 3];
            for (h, fd) in high.iter_mut().zip(fds) {
                *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, h) in (3..).zip(high) {
                if libc::dup2(h, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        std::io::Error::new(e.kind(), format!("start logging binary {program}: {e}"))
    })?;
    drop((out_r, err_r, ready_w));
    let pid = child.id() as i32;
    owner.reaper.watch(pid, |_| {});
    let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
    let limit =
        PollTimeout::try_from(LOGGER_READY_LIMIT.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    let ready = loop {
        match poll(&mut fds, limit) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(n) => break n > 0,
            Err(e) => return Err(e.into()),
        }
    };
    if !ready {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "logging binary {program} did not close its fd 5 (ready) within {}s",
                LOGGER_READY_LIMIT.as_secs()
            ),
        ));
    }
    Ok((File::from(out_w), File::from(err_w)))
}

/// Where the container's stdout and stderr go: FIFOs (plain paths), a file (`file://PATH`,
/// both streams appended to it) or a logging binary (`binary://PATH?args`).
fn outputs(paths: &StdioPaths, owner: Owner<'_>) -> std::io::Result<(Option<File>, Option<File>)> {
    if paths.stdout.starts_with("binary://") {
        let (out, err) = spawn_logger(&paths.stdout, owner)?;
        return Ok((Some(out), (!paths.stderr.is_empty()).then_some(err)));
    }
    let open = |p: &str| -> std::io::Result<Option<File>> {
        if p.is_empty() {
            return Ok(None);
        }
        if let Some(rest) = p.strip_prefix("file://") {
            let path = PathBuf::from(percent_decode(rest.split('?').next().unwrap_or(rest)));
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            return OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map(Some)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())));
        }
        open_output(Path::new(p)).map(Some)
    };
    Ok((open(&paths.stdout)?, open(&paths.stderr)?))
}

/// Set up the pipes and copiers for `paths`; returns the container side of the pipes.
pub fn setup(paths: &StdioPaths, copiers: &Copiers, owner: Owner<'_>) -> std::io::Result<ChildIo> {
    let mut io = ChildIo::default();
    if !paths.stdin.is_empty() {
        let (r, w) = pipe()?;
        io.stdin = Some(r);
        let (stop_r, stop_w) = pipe()?;
        *copiers.stdin_stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop_w);
        let fifo = open_stdin(Path::new(&paths.stdin))?;
        std::thread::Builder::new()
            .name("stdin".into())
            .stack_size(64 * 1024)
            .spawn(move || copy_stdin(fifo, File::from(w), stop_r))?;
    }
    let (stdout, stderr) = outputs(paths, owner)?;
    for (target, out) in [(1, stdout), (2, stderr)] {
        let Some(out) = out else { continue };
        let (r, w) = pipe()?;
        if target == 1 {
            io.stdout = Some(w);
        } else {
            io.stderr = Some(w);
        }
        copiers.begin();
        let c = copiers.clone();
        spawn_copy(
            if target == 1 { "stdout" } else { "stderr" },
            File::from(r),
            out,
            move || c.end(),
        )?;
    }
    Ok(io)
}

/// The listening end of runc's `--console-socket`: the runtime connects during create/exec and
/// sends the pty master over it (SCM_RIGHTS).
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listen at `dir/name`, or in the temp dir when that path is too long for a socket.
    pub fn new(dir: &Path, name: &str) -> std::io::Result<ConsoleSocket> {
        let mut path = dir.join(name);
        if path.as_os_str().len() > 100 {
            path =
                std::env::temp_dir().join(format!("kapsel-console-{}-{name}", std::process::id()));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the runtime sent; call once the runtime command has returned (the
    /// connection and the message wait in the socket's queues until then).
    pub fn receive(&self) -> std::io::Result<File> {
        self.listener.set_nonblocking(true)?;
        let (stream, _) = self.listener.accept()?;
        stream.set_nonblocking(false)?;
        let mut byte = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!(RawFd);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed `fd` in this process for us (SCM_RIGHTS);
                    // nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    return Ok(File::from(owned));
                }
            }
        }
        Err(std::io::Error::other(
            "console socket: no pty master received",
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Wire a pty master to the client's FIFOs; returns a handle for resizing.
pub fn setup_console(
    master: File,
    paths: &StdioPaths,
    copiers: &Copiers,
    owner: Owner<'_>,
) -> std::io::Result<File> {
    if !paths.stdin.is_empty() {
        let (stop_r, stop_w) = pipe()?;
        *copiers.stdin_stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop_w);
        let fifo = open_stdin(Path::new(&paths.stdin))?;
        let to = master.try_clone()?;
        std::thread::Builder::new()
            .name("stdin".into())
            .stack_size(64 * 1024)
            .spawn(move || copy_stdin(fifo, to, stop_r))?;
    }
    if let (Some(out), _) = outputs(paths, owner)? {
        copiers.begin();
        let c = copiers.clone();
        // Reading the master fails with EIO once the container side is closed: the end.
        spawn_copy("console", master.try_clone()?, out, move || c.end())?;
    }
    Ok(master)
}

/// Set the window size of a pty.
pub fn resize(master: &File, width: u32, height: u32) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call;
    // the fd is a pty master this process owns.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn open_stdin(path: &Path) -> std::io::Result<File> {
    Ok(File::from(
        nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_owner() -> Owner<'static> {
        static REAPER: std::sync::OnceLock<Reaper> = std::sync::OnceLock::new();
        Owner {
            id: "t",
            namespace: "n",
            reaper: REAPER.get_or_init(Reaper::default),
        }
    }

    #[test]
    fn log_uris_parse_like_containerd() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(
            logger_command("binary:///usr/bin/log%20it?dir=%2Ftmp%2Fx&verbose"),
            Some((
                "/usr/bin/log it".to_string(),
                vec!["dir".into(), "/tmp/x".into(), "verbose".into()]
            ))
        );
        assert_eq!(logger_command("/run/fifo"), None);
    }

    /// A logging binary gets the output on fds 3 and 4, its identity in the environment, and
    /// is waited for until it closes fd 5.
    #[test]
    fn logging_binary_receives_output() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("logger.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID $1 $2\" > \"$2.who\"\n\
             exec 5>&- 6<&3 7<&4 3<&- 4<&-\n\
             cat <&6 > \"$2.out\" & cat <&7 > \"$2.err\" & wait\ntouch \"$2.done\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let base = dir.path().join("log");
        let uri = format!("binary://{}?dir={}", script.display(), base.display());
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let reaper = Reaper::default();
        let owner = Owner {
            id: "c9",
            namespace: "ns9",
            reaper: &reaper,
        };
        let copiers = Copiers::default();
        let io = setup(&paths, &copiers, owner).unwrap();
        // Ready means fd 5 was closed, which the script does after writing `.who`.
        let who = std::fs::read_to_string(base.with_extension("who")).unwrap();
        assert_eq!(who.trim(), format!("ns9/c9 dir {}", base.display()));
        File::from(io.stdout.unwrap()).write_all(b"to out").unwrap();
        File::from(io.stderr.unwrap()).write_all(b"to err").unwrap();
        copiers.wait(Duration::from_secs(5));
        let done = base.with_extension("done");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(base.with_extension("out")).unwrap(),
            "to out"
        );
        assert_eq!(
            std::fs::read_to_string(base.with_extension("err")).unwrap(),
            "to err"
        );
    }

    #[test]
    fn copies_output_and_reports_drained() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::write(&out, b"").unwrap();
        let copiers = Copiers::default();
        let paths = StdioPaths {
            stdout: out.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let io = setup(&paths, &copiers, test_owner()).unwrap();
        let mut w = File::from(io.stdout.unwrap());
        w.write_all(b"hi\n").unwrap();
        drop(w);
        copiers.wait(Duration::from_secs(5));
        assert_eq!(std::fs::read(&out).unwrap(), b"hi\n");
    }

    #[test]
    fn stdin_copier_follows_client_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("in");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let copiers = Copiers::default();
        let paths = StdioPaths {
            stdin: fifo.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let io = setup(&paths, &copiers, test_owner()).unwrap();
        let mut container_in = File::from(io.stdin.unwrap());
        let mut client = OpenOptions::new().write(true).open(&fifo).unwrap();
        client.write_all(b"abc").unwrap();
        drop(client);
        let mut got = Vec::new();
        container_in.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc");

        // CloseIO while the client still holds the FIFO open: what it wrote gets through first.
        let fifo3 = dir.path().join("in3");
        nix::unistd::mkfifo(&fifo3, Mode::from_bits_truncate(0o600)).unwrap();
        let copiers3 = Copiers::default();
        let paths = StdioPaths {
            stdin: fifo3.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let io = setup(&paths, &copiers3, test_owner()).unwrap();
        let mut client = OpenOptions::new().write(true).open(&fifo3).unwrap();
        client.write_all(b"before close").unwrap();
        copiers3.stop_stdin();
        let mut got = Vec::new();
        File::from(io.stdin.unwrap()).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"before close");
        drop(client);

        // A client that never comes: stopping ends the copier and closes the container's stdin.
        let fifo2 = dir.path().join("in2");
        nix::unistd::mkfifo(&fifo2, Mode::from_bits_truncate(0o600)).unwrap();
        let copiers = Copiers::default();
        let paths = StdioPaths {
            stdin: fifo2.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let io = setup(&paths, &copiers, test_owner()).unwrap();
        copiers.stop_stdin();
        let mut got = Vec::new();
        File::from(io.stdin.unwrap()).read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }
}
