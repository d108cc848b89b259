//! Device access rules: `linux.resources.devices` checked and followed by runc's default
//! allowances; rendered as v1 devices.allow / devices.deny lines here, compiled into a v2 eBPF
//! program by `device_filter`.

use super::CgroupError;
use crate::spec::DeviceCgroup;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    pub(super) allow: bool,
    /// 'a' (all), 'b' or 'c'.
    pub(super) typ: char,
    /// `None` is the wildcard `*`.
    pub(super) major: Option<i64>,
    pub(super) minor: Option<i64>,
    /// Some of "rwm", in that order.
    pub(super) access: String,
}

/// The devices every container may use, appended after the spec's rules exactly as runc does
/// (libcontainer/specconv's AllowedDevices): mknod of any char or block device, /dev/null,
/// random, full, tty, zero, urandom, the pty slaves, /dev/ptmx and /dev/net/tun.
const DEFAULT_ALLOWED: &[(char, Option<i64>, Option<i64>, &str)] = &[
    ('c', None, None, "m"),
    ('b', None, None, "m"),
    ('c', Some(1), Some(3), "rwm"),
    ('c', Some(1), Some(8), "rwm"),
    ('c', Some(1), Some(7), "rwm"),
    ('c', Some(5), Some(0), "rwm"),
    ('c', Some(1), Some(5), "rwm"),
    ('c', Some(1), Some(9), "rwm"),
    ('c', Some(136), None, "rwm"),
    ('c', Some(5), Some(2), "rwm"),
    ('c', Some(10), Some(200), "rwm"),
];

impl Rule {
    fn from_spec(index: usize, rule: &DeviceCgroup) -> Result<Rule, CgroupError> {
        let invalid = |name: &str, value: String, reason: &str| CgroupError::Invalid {
            field: format!("linux.resources.devices[{index}].{name}"),
            value,
            reason: reason.to_string(),
        };
        let typ = match rule.typ.as_deref() {
            None | Some("a") => 'a',
            Some("b") => 'b',
            Some("c") => 'c',
            Some(other) => {
                return Err(invalid(
                    "type",
                    other.to_string(),
                    "must be \"a\", \"b\" or \"c\"",
                ))
            }
        };
        let number = |name: &str, value: Option<i64>| match value {
            None | Some(-1) => Ok(None),
            Some(n) if n >= 0 => Ok(Some(n)),
            Some(n) => Err(invalid(
                name,
                n.to_string(),
                "must be -1 (any) or at least 0",
            )),
        };
        let major = number("major", rule.major)?;
        let minor = number("minor", rule.minor)?;
        let requested = rule.access.as_deref().filter(|a| !a.is_empty());
        let access = match requested {
            None => "rwm".to_string(),
            Some(a) if a.chars().all(|c| "rwm".contains(c)) => {
                "rwm".chars().filter(|c| a.contains(*c)).collect()
            }
            Some(a) => {
                return Err(invalid(
                    "access",
                    a.to_string(),
                    "must be made of \"r\", \"w\" and \"m\"",
                ))
            }
        };
        Ok(Rule {
            allow: rule.allow,
            typ,
            major,
            minor,
            access,
        })
    }

    fn default_rules() -> impl Iterator<Item = Rule> {
        DEFAULT_ALLOWED
            .iter()
            .map(|&(typ, major, minor, access)| Rule {
                allow: true,
                typ,
                major,
                minor,
                access: access.to_string(),
            })
    }

    /// The v1 line, e.g. "c 1:3 rwm", "c 136:* rwm", "a *:* rwm".
    pub(super) fn line(&self) -> String {
        let number = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.typ,
            number(self.major),
            number(self.minor),
            self.access
        )
    }

    /// devices.allow or devices.deny.
    pub(super) fn file(&self) -> &'static str {
        if self.allow {
            "devices.allow"
        } else {
            "devices.deny"
        }
    }

    /// Whether the rule covers every device with every access.
    fn is_everything(&self) -> bool {
        self.typ == 'a' && self.access == "rwm"
    }
}

/// Whether the rules end up allowing every device: the last "all devices" rule allows everything
/// and only allow rules follow it.
fn allows_everything(rules: &[Rule]) -> bool {
    match rules.iter().rposition(|r| r.typ == 'a') {
        Some(i) => {
            rules[i].allow && rules[i].is_everything() && rules[i + 1..].iter().all(|r| r.allow)
        }
        None => false,
    }
}

pub(super) fn parse(spec: &[DeviceCgroup]) -> Result<Vec<Rule>, CgroupError> {
    spec.iter()
        .enumerate()
        .map(|(i, d)| Rule::from_spec(i, d))
        .collect()
}

/// The rules in force, in order: the spec's, then the defaults unless everything is allowed
/// already (runc's specconv appends the same list). v1 writes them as they are; v2 compiles them
/// into a program in which whatever no rule allows is denied.
/// The rules to enforce: unless they allow everything, a container starts from "deny all" (as
/// runc's, also when config.json has no device rules or no linux.resources at all), then the
/// spec's rules, then the default allowances.
pub(super) fn rules(spec: &[DeviceCgroup]) -> Result<Vec<Rule>, CgroupError> {
    let mut rules = parse(spec)?;
    if !allows_everything(&rules) {
        let deny_all = Rule {
            allow: false,
            typ: 'a',
            major: None,
            minor: None,
            access: "rwm".to_string(),
        };
        if rules.first() != Some(&deny_all) {
            rules.insert(0, deny_all);
        }
        rules.extend(Rule::default_rules());
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        typ: Option<&str>,
        major: Option<i64>,
        minor: Option<i64>,
        access: Option<&str>,
    ) -> DeviceCgroup {
        DeviceCgroup {
            allow,
            typ: typ.map(str::to_string),
            major,
            minor,
            access: access.map(str::to_string),
        }
    }

    fn lines(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| format!("{} {}", r.file(), r.line()))
            .collect()
    }

    #[test]
    fn spec_rules_then_defaults() {
        let spec = [
            rule(false, None, None, None, Some("rwm")),
            rule(true, Some("b"), Some(8), Some(-1), Some("r")),
            rule(false, Some("c"), Some(1), Some(3), None),
            rule(true, Some("c"), None, Some(5), Some("mw")),
        ];
        assert_eq!(
            lines(&rules(&spec).unwrap()),
            vec![
                "devices.deny a *:* rwm",
                "devices.allow b 8:* r",
                "devices.deny c 1:3 rwm",
                "devices.allow c *:5 wm",
                "devices.allow c *:* m",
                "devices.allow b *:* m",
                "devices.allow c 1:3 rwm",
                "devices.allow c 1:8 rwm",
                "devices.allow c 1:7 rwm",
                "devices.allow c 5:0 rwm",
                "devices.allow c 1:5 rwm",
                "devices.allow c 1:9 rwm",
                "devices.allow c 136:* rwm",
                "devices.allow c 5:2 rwm",
                "devices.allow c 10:200 rwm",
            ]
        );
    }

    #[test]
    fn allow_all_gets_no_defaults() {
        let spec = [rule(true, None, None, None, None)];
        assert_eq!(
            lines(&rules(&spec).unwrap()),
            vec!["devices.allow a *:* rwm"]
        );
        // A deny after the allow-all brings the defaults back.
        let spec = [
            rule(true, Some("a"), None, None, Some("rwm")),
            rule(false, Some("c"), Some(10), Some(229), Some("rwm")),
        ];
        assert_eq!(rules(&spec).unwrap().len(), 1 + 2 + DEFAULT_ALLOWED.len());
    }

    #[test]
    fn invalid_rules_name_the_field() {
        let err = rules(&[rule(true, Some("x"), None, None, None)]).unwrap_err();
        assert!(
            err.to_string().contains("linux.resources.devices[0].type"),
            "{err}"
        );
        let err = rules(&[
            rule(false, None, None, None, None),
            rule(true, Some("c"), Some(1), Some(3), Some("rx")),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("linux.resources.devices[1].access"),
            "{err}"
        );
        assert!(rules(&[rule(true, Some("c"), Some(-2), None, None)]).is_err());
    }
}
