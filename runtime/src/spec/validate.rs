//! Checks on a loaded config.json: what the runtime relies on, with the field named in the error.

use super::{NamespaceType, Spec, SpecError};
use std::collections::HashSet;

fn invalid(msg: impl Into<String>) -> SpecError {
    SpecError::Invalid(msg.into())
}

impl Spec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.oci_version.is_empty() {
            return Err(invalid("ociVersion must be set"));
        }
        if !self.oci_version.starts_with("1.") {
            return Err(invalid(format!(
                "ociVersion {:?} is not supported (this runtime implements 1.x)",
                self.oci_version
            )));
        }
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| invalid("root must be set"))?;
        if root.path.as_os_str().is_empty() {
            return Err(invalid("root.path must not be empty"));
        }
        let process = self
            .process
            .as_ref()
            .ok_or_else(|| invalid("process must be set"))?;
        if process.args.is_empty() && process.command_line.is_none() {
            return Err(invalid("process.args must not be empty"));
        }
        if !process.cwd.is_absolute() {
            return Err(invalid(format!(
                "process.cwd {:?} must be an absolute path",
                process.cwd
            )));
        }
        for m in &self.mounts {
            if !m.destination.is_absolute() {
                return Err(invalid(format!(
                    "mounts: destination {:?} must be an absolute path",
                    m.destination
                )));
            }
        }
        if let Some(linux) = &self.linux {
            let mut seen = HashSet::new();
            for ns in &linux.namespaces {
                if !seen.insert(ns.typ) {
                    return Err(invalid(format!(
                        "linux.namespaces: {} is listed twice",
                        ns.typ.name()
                    )));
                }
                if let Some(p) = &ns.path {
                    if !p.is_absolute() {
                        return Err(invalid(format!(
                            "linux.namespaces: path {p:?} of the {} namespace must be absolute",
                            ns.typ.name()
                        )));
                    }
                }
            }
            let userns = self.namespace(NamespaceType::User).is_some();
            if !userns && (!linux.uid_mappings.is_empty() || !linux.gid_mappings.is_empty()) {
                return Err(invalid(
                    "linux.uidMappings/gidMappings are set but there is no user namespace",
                ));
            }
            if let Some(user) = self.namespace(NamespaceType::User) {
                if user.path.is_none()
                    && (linux.uid_mappings.is_empty() || linux.gid_mappings.is_empty())
                {
                    return Err(invalid(
                        "a new user namespace needs linux.uidMappings and linux.gidMappings",
                    ));
                }
            }
            if linux.time_offsets.is_some()
                && self
                    .namespace(NamespaceType::Time)
                    .is_none_or(|ns| ns.path.is_some())
            {
                return Err(invalid("linux.timeOffsets needs a new time namespace"));
            }
            if !linux.sysctl.is_empty() {
                for key in linux.sysctl.keys() {
                    check_sysctl(self, key)?;
                }
            }
            for dev in &linux.devices {
                if !dev.path.is_absolute() {
                    return Err(invalid(format!(
                        "linux.devices: path {:?} must be absolute",
                        dev.path
                    )));
                }
                if !matches!(dev.typ.as_str(), "c" | "b" | "u" | "p") {
                    return Err(invalid(format!(
                        "linux.devices: {:?} has type {:?}; it must be one of c, b, u, p",
                        dev.path, dev.typ
                    )));
                }
            }
            if let Some(p) = &linux.rootfs_propagation {
                if crate::init::mounts::propagation_flag(p).is_none() {
                    return Err(invalid(format!(
                        "linux.rootfsPropagation {p:?} is not one of shared, slave, private, unbindable (optionally with r)"
                    )));
                }
            }
        }
        if self.hostname.is_some() && self.namespace(NamespaceType::Uts).is_none() {
            return Err(invalid("hostname is set but there is no uts namespace"));
        }
        Ok(())
    }
}

/// A sysctl may only be set where the container has the namespace it belongs to, as runc checks.
fn check_sysctl(spec: &Spec, key: &str) -> Result<(), SpecError> {
    let ns_of = |typ| spec.namespace(typ).is_some();
    let needs = if key.starts_with("net.") {
        Some(NamespaceType::Network)
    } else if key.starts_with("fs.mqueue.")
        || matches!(
            key,
            "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
        )
    {
        Some(NamespaceType::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        return Err(invalid(format!(
            "linux.sysctl: {key} must be set with the hostname/domainname fields"
        )));
    } else {
        None
    };
    match needs {
        Some(ns) if ns_of(ns) => Ok(()),
        Some(ns) => Err(invalid(format!(
            "linux.sysctl: {key} needs a {} namespace",
            ns.name()
        ))),
        None => Err(invalid(format!(
            "linux.sysctl: {key} is not namespaced and would change the host"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
    }

    fn check(v: serde_json::Value) -> Result<(), String> {
        let spec: Spec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn block_io_uses_the_oci_key() {
        let r: crate::spec::LinuxResources =
            serde_json::from_str(r#"{"blockIO":{"weight":500}}"#).unwrap();
        assert_eq!(r.block_io.unwrap().weight, Some(500));
    }

    #[test]
    fn accepts_minimal_config() {
        check(base()).unwrap();
    }

    #[test]
    fn empty_args_named() {
        let mut v = base();
        v["process"]["args"] = serde_json::json!([]);
        assert_eq!(
            check(v).unwrap_err(),
            "config.json: process.args must not be empty"
        );
    }

    #[test]
    fn relative_cwd_named() {
        let mut v = base();
        v["process"]["cwd"] = "tmp".into();
        assert!(check(v).unwrap_err().contains("process.cwd"));
    }

    #[test]
    fn duplicate_namespace_rejected() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
        assert!(check(v).unwrap_err().contains("listed twice"));
    }

    #[test]
    fn unknown_namespace_type_is_a_parse_error() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "bogus"}]);
        assert!(check(v).unwrap_err().contains("unknown variant"));
    }

    #[test]
    fn userns_needs_mappings() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "user"}]);
        assert!(check(v).unwrap_err().contains("uidMappings"));
    }

    #[test]
    fn sysctl_needs_its_namespace() {
        let mut v = base();
        v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        assert!(check(v.clone()).unwrap_err().contains("network namespace"));
        v["linux"]["namespaces"] = serde_json::json!([{"type": "network"}]);
        check(v.clone()).unwrap();
        v["linux"]["sysctl"] = serde_json::json!({"vm.swappiness": "1"});
        assert!(check(v).unwrap_err().contains("not namespaced"));
    }

    #[test]
    fn hostname_needs_uts() {
        let mut v = base();
        v["hostname"] = "x".into();
        assert!(check(v).unwrap_err().contains("uts namespace"));
    }
}
