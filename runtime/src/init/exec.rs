//! The last step: find the executable, close what the container must not inherit, execve.

use super::InitError;
use crate::spec::Process;
use crate::syscall::Kernel;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves `args[0]` as execvp would, with the container's own PATH (from `process.env`).
pub fn find_executable(p: &Process) -> Result<PathBuf, InitError> {
    let name = p.args.first().map(String::as_str).unwrap_or_default();
    if name.contains('/') {
        let path = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            p.cwd.join(name)
        };
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                Err(InitError::Config(format!("exec: {name:?}: is a directory")))
            }
            Ok(_) if is_executable(&path) => Ok(PathBuf::from(name)),
            Ok(_) => Err(InitError::Config(format!(
                "exec: {name:?}: permission denied"
            ))),
            Err(e) => Err(InitError::Config(format!("exec: {name:?}: {e}"))),
        };
    }
    let path_var = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(InitError::Config(format!(
        "exec: {name:?}: executable file not found in $PATH"
    )))
}

/// Marks every descriptor above stdio and the preserved ones close-on-exec, so nothing of the
/// runtime's (state directory, sockets, host files) reaches the container.
pub fn close_inherited_fds(preserve_fds: i32, keep: &[i32]) {
    let first = 3 + preserve_fds.max(0);
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        // No /proc: fall back to a bounded sweep.
        for fd in first..1024 {
            if !keep.contains(&fd) {
                set_cloexec(fd);
            }
        }
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= first && !keep.contains(&fd) {
            set_cloexec(fd);
        }
    }
}

fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor number; an invalid one fails with EBADF and is ignored.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

fn cstrings<'a>(it: impl Iterator<Item = &'a [u8]>) -> Vec<CString> {
    it.map(|s| {
        CString::new(s.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>()).unwrap_or_default()
    })
    .collect()
}

/// Replaces the process with the container's. Returns only on failure.
pub fn exec(k: &dyn Kernel, p: &Process, exe: &Path, preserve_fds: i32) -> std::io::Error {
    close_inherited_fds(preserve_fds, &[]);
    let path = cstrings(std::iter::once(exe.as_os_str().as_bytes())).remove(0);
    let args = cstrings(p.args.iter().map(|a| a.as_bytes()));
    let mut env = p.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(p.user.uid)));
    }
    let env = cstrings(env.iter().map(|e| e.as_bytes()));
    // Signals blocked or ignored by the runtime must not leak into the container.
    reset_signals();
    k.execve(&path, &args, &env)
}

/// HOME from the container's /etc/passwd, or "/" as runc defaults.
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".into())
}

pub fn reset_signals() {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition is always valid for these signals.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_uses_container_path() {
        let p = Process {
            args: vec!["sh".into()],
            env: vec!["PATH=/nonexistent:/bin".into()],
            cwd: "/".into(),
            ..Default::default()
        };
        assert_eq!(find_executable(&p).unwrap(), PathBuf::from("/bin/sh"));
        let p = Process {
            args: vec!["no-such-binary-kapsel".into()],
            ..p
        };
        let e = find_executable(&p).unwrap_err().to_string();
        assert!(e.contains("executable file not found"), "{e}");
    }

    #[test]
    fn absolute_directory_is_rejected() {
        let p = Process {
            args: vec!["/tmp".into()],
            cwd: "/".into(),
            ..Default::default()
        };
        assert!(find_executable(&p)
            .unwrap_err()
            .to_string()
            .contains("directory"));
    }
}
