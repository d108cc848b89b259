//! AppArmor profiles and SELinux labels for the container's process, applied on its next
//! execve through /proc/self/attr. Where the host does not run the LSM, the field is ignored
//! (as runc does), with a debug log.

use super::InitError;
use crate::spec::Process;
use crate::syscall::Kernel;
use std::path::Path;

/// Which LSMs the host has enabled; read from the host's /sys before pivot_root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl Lsm {
    pub fn detect() -> Lsm {
        Lsm {
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|s| s.trim() == "Y"),
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
        }
    }

    pub fn apply(&self, k: &dyn Kernel, p: &Process) -> Result<(), InitError> {
        if let Some(profile) = p.apparmor_profile.as_deref().filter(|s| !s.is_empty()) {
            if self.apparmor {
                let newer = Path::new("/proc/self/attr/apparmor/exec");
                let path = if newer.exists() {
                    newer
                } else {
                    Path::new("/proc/self/attr/exec")
                };
                k.write_file(path, format!("exec {profile}").as_bytes())
                    .map_err(|source| InitError::Sys {
                        what: format!("set AppArmor profile {profile:?} (is it loaded?)"),
                        source,
                    })?;
            } else {
                tracing::debug!(
                    "AppArmor is not enabled on this host; ignoring profile {profile:?}"
                );
            }
        }
        if let Some(label) = p.selinux_label.as_deref().filter(|s| !s.is_empty()) {
            if self.selinux {
                k.write_file(Path::new("/proc/self/attr/exec"), label.as_bytes())
                    .map_err(|source| InitError::Sys {
                        what: format!("set SELinux label {label:?}"),
                        source,
                    })?;
            } else {
                tracing::debug!("SELinux is not enabled on this host; ignoring label {label:?}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::fake::{Call, Recorder};

    #[test]
    fn profile_written_only_where_enabled() {
        let p = Process {
            apparmor_profile: Some("docker-default".into()),
            selinux_label: Some("system_u:system_r:container_t:s0".into()),
            ..Default::default()
        };
        let k = Recorder::new();
        Lsm::default().apply(&k, &p).unwrap();
        assert!(k.take().is_empty());
        let on = Lsm {
            apparmor: true,
            selinux: true,
        };
        on.apply(&k, &p).unwrap();
        let calls = k.take();
        assert_eq!(calls.len(), 2);
        assert!(
            matches!(&calls[0], Call::WriteFile { data, .. } if data == b"exec docker-default")
        );
        assert!(
            matches!(&calls[1], Call::WriteFile { path, .. } if path == Path::new("/proc/self/attr/exec"))
        );
    }
}
