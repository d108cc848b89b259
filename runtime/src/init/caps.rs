//! Capabilities: names, and the order of bounding drop, keep-caps, capset and ambient raise.

use super::InitError;
use crate::spec::Capabilities;
use crate::syscall::{CapSets, Kernel};

/// Capability names in kernel order (index = capability number).
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The highest capability the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// Parses `CAP_NET_ADMIN`, `net_admin` or `NET_ADMIN`.
pub fn parse(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// A named set as a mask. Unknown names are an error; capabilities beyond what the kernel
/// knows, or outside the runtime's own bounding set, are left out with a warning (the container
/// could never hold them, and `docker run --privileged` asks for every name there is).
fn mask(
    k: &dyn Kernel,
    set: &str,
    names: &Option<Vec<String>>,
    last: u32,
) -> Result<u64, InitError> {
    let mut m = 0u64;
    for n in names.iter().flatten() {
        // As runc: a name this runtime does not know is left out with a warning, so specs
        // written for newer kernels still run.
        let Some(cap) = parse(n) else {
            tracing::warn!("process.capabilities.{set}: ignoring unknown capability {n:?}");
            continue;
        };
        if cap > last {
            tracing::warn!("capability {n} is not known to this kernel; leaving it out");
            continue;
        }
        if !k.in_bounding(cap) {
            tracing::warn!(
                "capability {n} is not in the runtime's bounding set; leaving it out of {set}"
            );
            continue;
        }
        m |= 1 << cap;
    }
    Ok(m)
}

/// The resolved sets of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolved {
    pub bounding: u64,
    pub sets: CapSets,
    pub ambient: u64,
}

pub fn resolve(
    k: &dyn Kernel,
    caps: Option<&Capabilities>,
    last: u32,
) -> Result<Resolved, InitError> {
    let Some(c) = caps else {
        return Ok(Resolved::default());
    };
    Ok(Resolved {
        bounding: mask(k, "bounding", &c.bounding, last)?,
        sets: CapSets {
            effective: mask(k, "effective", &c.effective, last)?,
            permitted: mask(k, "permitted", &c.permitted, last)?,
            inheritable: mask(k, "inheritable", &c.inheritable, last)?,
        },
        ambient: mask(k, "ambient", &c.ambient, last)?,
    })
}

/// Drops from the bounding set everything not in `r.bounding`. Done while still privileged.
pub fn drop_bounding(k: &dyn Kernel, r: &Resolved, last: u32) -> Result<(), InitError> {
    for cap in 0..=last {
        if r.bounding & (1 << cap) == 0 && k.in_bounding(cap) {
            k.drop_bounding(cap).map_err(|source| InitError::Sys {
                what: format!("drop {} from the bounding set", cap_name(cap)),
                source,
            })?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets, then raises the ambient ones.
pub fn apply(k: &dyn Kernel, r: &Resolved, last: u32) -> Result<(), InitError> {
    k.capset(r.sets).map_err(|source| InitError::Sys {
        what: "set capabilities (capset)".into(),
        source,
    })?;
    if r.ambient != 0 {
        k.clear_ambient().map_err(|source| InitError::Sys {
            what: "clear ambient capabilities".into(),
            source,
        })?;
        for cap in 0..=last {
            if r.ambient & (1 << cap) != 0 {
                // Ambient needs the capability in permitted and inheritable; the kernel
                // refuses otherwise. Specs often list ambient without inheritable (runc's
                // default does), so that case is expected and not worth a warning.
                let both = r.sets.permitted & r.sets.inheritable;
                if both & (1 << cap) == 0 {
                    tracing::debug!(
                        "ambient capability {} is not in permitted and inheritable; skipped",
                        cap_name(cap)
                    );
                    continue;
                }
                if let Err(e) = k.raise_ambient(cap) {
                    tracing::warn!("cannot raise ambient capability {}: {e}", cap_name(cap));
                }
            }
        }
    }
    Ok(())
}

pub fn cap_name(cap: u32) -> &'static str {
    NAMES.get(cap as usize).copied().unwrap_or("CAP_UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::fake::{Call, Recorder};

    #[test]
    fn parses_names_in_all_spellings() {
        assert_eq!(parse("CAP_NET_ADMIN"), Some(12));
        assert_eq!(parse("net_admin"), Some(12));
        assert_eq!(parse("SYS_ADMIN"), Some(21));
        assert_eq!(parse("CAP_BOGUS"), None);
    }

    #[test]
    fn caps_outside_bounding_are_left_out() {
        let mut k = Recorder::new();
        k.not_in_bounding = vec![24];
        let caps = Capabilities {
            bounding: Some(vec!["CAP_CHOWN".into(), "CAP_SYS_RESOURCE".into()]),
            effective: Some(vec!["CAP_SYS_RESOURCE".into()]),
            ..Default::default()
        };
        let r = resolve(&k, Some(&caps), 40).unwrap();
        assert_eq!(r.bounding, 1);
        assert_eq!(r.sets.effective, 0);
    }

    #[test]
    fn unknown_cap_is_left_out() {
        let caps = Capabilities {
            bounding: Some(vec!["CAP_NOPE".into(), "CAP_KILL".into()]),
            ..Default::default()
        };
        let r = resolve(&Recorder::new(), Some(&caps), 40).unwrap();
        assert_eq!(r.bounding, 1 << 5);
    }

    #[test]
    fn drops_all_but_bounding() {
        let k = Recorder::new();
        let r = Resolved {
            bounding: 0b101,
            ..Default::default()
        };
        drop_bounding(&k, &r, 3).unwrap();
        assert_eq!(k.take(), vec![Call::DropBounding(1), Call::DropBounding(3)]);
    }
}
