//! OCI hooks: each one runs with the container state on stdin, its own args (args[0] is argv[0])
//! and env, and is killed when its timeout passes.

use crate::spec::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{phase} hook {path}: cannot start: {source}")]
    Spawn {
        phase: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{phase} hook {path} failed: {status}{stderr}")]
    Failed {
        phase: &'static str,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{phase} hook {path} timed out after {secs}s and was killed")]
    Timeout {
        phase: &'static str,
        path: String,
        secs: i64,
    },
}

pub fn run_all(phase: &'static str, hooks: &[Hook], state_json: &str) -> Result<(), HookError> {
    for h in hooks {
        run_one(phase, h, state_json)?;
    }
    Ok(())
}

fn run_one(phase: &'static str, h: &Hook, state_json: &str) -> Result<(), HookError> {
    let path = h.path.display().to_string();
    let mut cmd = Command::new(&h.path);
    if let Some((argv0, rest)) = h.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in &h.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        phase,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin (or has already exited) is fine: ignore SIGPIPE
        // for this one write, since the runtime otherwise keeps its default disposition.
        // SAFETY: swapping a signal disposition and restoring it; no handler code runs.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let _ = stdin.write_all(state_json.as_bytes());
        // SAFETY: restores the disposition saved above.
        unsafe { libc::signal(libc::SIGPIPE, old) };
    }
    let deadline = h
        .timeout
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    phase,
                    path,
                    source,
                })
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                phase,
                path,
                secs: h.timeout.unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let stderr = stderr.trim();
    Err(HookError::Failed {
        phase,
        path,
        status: status.to_string(),
        stderr: if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<i64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["K=v".into()],
            timeout,
        }
    }

    #[test]
    fn hook_gets_state_on_stdin_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = sh(
            &format!("cat > {}; echo $K >> {}", out.display(), out.display()),
            None,
        );
        run_all("prestart", &[h], "{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "{\"id\":\"x\"}v\n");
    }

    #[test]
    fn failing_hook_reports_status_and_stderr() {
        let e = run_all("poststart", &[sh("echo nope >&2; exit 3", None)], "{}").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("exit status: 3") && s.contains("nope"), "{s}");
    }

    #[test]
    fn slow_hook_is_killed() {
        let e = run_all("prestart", &[sh("sleep 5", Some(1))], "{}").unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }));
    }
}
