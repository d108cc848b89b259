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

/// Set up the pipes and copiers for `paths`; returns the container side of the pipes.
pub fn setup(paths: &StdioPaths, copiers: &Copiers) -> std::io::Result<ChildIo> {
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
    for (target, path) in [(1, &paths.stdout), (2, &paths.stderr)] {
        if path.is_empty() {
            continue;
        }
        let out = open_output(Path::new(path))?;
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
pub fn setup_console(master: File, paths: &StdioPaths, copiers: &Copiers) -> std::io::Result<File> {
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
    if !paths.stdout.is_empty() {
        let out = open_output(Path::new(&paths.stdout))?;
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
        let io = setup(&paths, &copiers).unwrap();
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
        let io = setup(&paths, &copiers).unwrap();
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
        let io = setup(&paths, &copiers3).unwrap();
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
        let io = setup(&paths, &copiers).unwrap();
        copiers.stop_stdin();
        let mut got = Vec::new();
        File::from(io.stdin.unwrap()).read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }
}
