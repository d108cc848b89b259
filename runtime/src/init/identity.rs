//! The process's limits and identity: rlimits, oom score, io priority, scheduler, personality,
//! groups/gid/uid, umask.

use super::InitError;
use crate::spec::{Process, Spec};
use crate::syscall::{Kernel, SchedAttr};
use std::path::Path;

pub fn rlimit_resource(name: &str) -> Option<libc::c_int> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as libc::c_int)
}

fn current_hard(resource: libc::c_int) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-parameter for the duration of the call.
    let rc = unsafe { libc::getrlimit(resource as _, &mut lim) };
    (rc == 0).then_some(lim.rlim_max)
}

/// Sets every rlimit; a limit above the runtime's own hard limit without CAP_SYS_RESOURCE gets
/// an error that says so.
pub fn set_rlimits(k: &dyn Kernel, p: &Process) -> Result<(), InitError> {
    for r in &p.rlimits {
        let res = rlimit_resource(&r.typ).ok_or_else(|| {
            InitError::Config(format!("process.rlimits: unknown rlimit type {:?}", r.typ))
        })?;
        if r.soft > r.hard {
            return Err(InitError::Config(format!(
                "process.rlimits: {} soft limit {} is above its hard limit {}",
                r.typ, r.soft, r.hard
            )));
        }
        if let Err(e) = k.setrlimit(res, r.soft, r.hard) {
            let hint = match (e.raw_os_error(), current_hard(res)) {
                (Some(libc::EPERM), Some(h)) => format!(
                    " (the runtime's hard limit is {h} and raising it needs CAP_SYS_RESOURCE, which this host does not grant: ask for at most {h})"
                ),
                _ => String::new(),
            };
            return Err(InitError::Config(format!(
                "setting rlimit {} to {}/{}: {e}{hint}",
                r.typ, r.soft, r.hard
            )));
        }
    }
    Ok(())
}

pub fn set_oom_score_adj(k: &dyn Kernel, p: &Process) -> Result<(), InitError> {
    let Some(adj) = p.oom_score_adj else {
        return Ok(());
    };
    let path = Path::new("/proc/self/oom_score_adj");
    // Writing the value that is already there needs no privilege; skip it.
    if std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        == Some(adj)
    {
        return Ok(());
    }
    k.write_file(path, adj.to_string().as_bytes()).map_err(|e| {
        InitError::Config(format!(
            "setting process.oomScoreAdj to {adj}: {e} (lowering it needs CAP_SYS_RESOURCE)"
        ))
    })
}

pub fn set_io_priority(k: &dyn Kernel, p: &Process) -> Result<(), InitError> {
    let Some(io) = &p.io_priority else {
        return Ok(());
    };
    let class = match io.class.as_str() {
        "IOPRIO_CLASS_RT" => 1,
        "IOPRIO_CLASS_BE" => 2,
        "IOPRIO_CLASS_IDLE" => 3,
        other => {
            return Err(InitError::Config(format!(
                "process.ioPriority.class {other:?} is not IOPRIO_CLASS_RT, _BE or _IDLE"
            )))
        }
    };
    k.set_io_priority(class, io.priority)
        .map_err(|source| InitError::Sys {
            what: "set io priority".into(),
            source,
        })
}

pub fn set_scheduler(k: &dyn Kernel, p: &Process) -> Result<(), InitError> {
    let Some(s) = &p.scheduler else {
        return Ok(());
    };
    let policy = match s.policy.as_str() {
        "SCHED_OTHER" => 0,
        "SCHED_FIFO" => 1,
        "SCHED_RR" => 2,
        "SCHED_BATCH" => 3,
        "SCHED_ISO" => 4,
        "SCHED_IDLE" => 5,
        "SCHED_DEADLINE" => 6,
        other => {
            return Err(InitError::Config(format!(
                "process.scheduler.policy {other:?} is unknown"
            )))
        }
    };
    let mut flags = 0u64;
    for f in &s.flags {
        flags |= match f.as_str() {
            "SCHED_FLAG_RESET_ON_FORK" => 0x01,
            "SCHED_FLAG_RECLAIM" => 0x02,
            "SCHED_FLAG_DL_OVERRUN" => 0x04,
            "SCHED_FLAG_KEEP_POLICY" => 0x08,
            "SCHED_FLAG_KEEP_PARAMS" => 0x10,
            "SCHED_FLAG_UTIL_CLAMP_MIN" => 0x20,
            "SCHED_FLAG_UTIL_CLAMP_MAX" => 0x40,
            other => {
                return Err(InitError::Config(format!(
                    "process.scheduler.flags: {other:?} is unknown"
                )))
            }
        };
    }
    let attr = SchedAttr {
        policy,
        flags,
        nice: s.nice,
        priority: s.priority as u32,
        runtime: s.runtime,
        deadline: s.deadline,
        period: s.period,
    };
    k.sched_setattr(&attr).map_err(|source| InitError::Sys {
        what: format!("set scheduler {}", s.policy),
        source,
    })
}

pub fn set_personality(k: &dyn Kernel, spec: &Spec) -> Result<(), InitError> {
    let Some(p) = spec.linux.as_ref().and_then(|l| l.personality.as_ref()) else {
        return Ok(());
    };
    let persona: libc::c_ulong = match p.domain.as_str() {
        "LINUX" => 0x0000,
        "LINUX32" => 0x0008,
        other => {
            return Err(InitError::Config(format!(
                "linux.personality.domain {other:?} is not LINUX or LINUX32"
            )))
        }
    };
    k.personality(persona).map_err(|source| InitError::Sys {
        what: "set personality".into(),
        source,
    })
}

/// Supplementary groups, gid, uid — in that order, while still privileged. `setgroups` is
/// skipped where the user namespace forbids it (rootless, `setgroups` = deny).
pub fn set_user(k: &dyn Kernel, p: &Process, setgroups_allowed: bool) -> Result<(), InitError> {
    let u = &p.user;
    if setgroups_allowed {
        k.setgroups(&u.additional_gids)
            .map_err(|source| InitError::Sys {
                what: format!("setgroups {:?}", u.additional_gids),
                source,
            })?;
    } else if !u.additional_gids.is_empty() {
        return Err(InitError::Config(
            "process.user.additionalGids cannot be set: setgroups is denied in this user namespace"
                .into(),
        ));
    }
    k.setresgid(u.gid).map_err(|source| InitError::Sys {
        what: format!("setgid {} (is the gid mapped?)", u.gid),
        source,
    })?;
    k.setresuid(u.uid).map_err(|source| InitError::Sys {
        what: format!("setuid {} (is the uid mapped?)", u.uid),
        source,
    })?;
    k.umask(u.umask.unwrap_or(0o022));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Rlimit;
    use crate::syscall::fake::{Call, Recorder};

    #[test]
    fn rlimit_errors_name_the_limit() {
        let p = Process {
            rlimits: vec![Rlimit {
                typ: "RLIMIT_NOFILE".into(),
                soft: 1 << 20,
                hard: 1 << 20,
            }],
            ..Default::default()
        };
        let k = Recorder::new();
        k.fail_on(|c| matches!(c, Call::Setrlimit { .. }), libc::EPERM);
        let e = set_rlimits(&k, &p).unwrap_err().to_string();
        assert!(
            e.contains("RLIMIT_NOFILE") && e.contains("CAP_SYS_RESOURCE"),
            "{e}"
        );
    }

    #[test]
    fn unknown_rlimit_is_an_error() {
        let p = Process {
            rlimits: vec![Rlimit {
                typ: "RLIMIT_FOO".into(),
                soft: 1,
                hard: 1,
            }],
            ..Default::default()
        };
        assert!(set_rlimits(&Recorder::new(), &p).is_err());
    }

    #[test]
    fn user_order_is_groups_gid_uid() {
        let mut p = Process::default();
        p.user.uid = 1000;
        p.user.gid = 100;
        p.user.additional_gids = vec![10];
        let k = Recorder::new();
        set_user(&k, &p, true).unwrap();
        assert_eq!(
            k.take(),
            vec![
                Call::Setgroups(vec![10]),
                Call::Setresgid(100),
                Call::Setresuid(1000),
                Call::Umask(0o022)
            ]
        );
    }
}
