//! Image references and Docker's normalisation of them.
//!
//! `busybox` → `docker.io/library/busybox:latest`; `127.0.0.1:5000/app:1`;
//! `name@sha256:<hex>`; `name:tag@sha256:<hex>` (the digest wins). The first path component is
//! a registry host when it contains `.` or `:`, is `localhost`, or has an uppercase letter
//! (the rules of Docker's reference package).

use std::fmt;

use crate::oci::Digest;

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, `localhost`, `[::1]:5000`.
    pub registry: String,
    /// `library/busybox`, `app`.
    pub repository: String,
    /// `None` only when a digest is given without a tag.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format {0:?}: empty")]
    Empty(String),
    #[error("invalid reference format {0:?}: repository name must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format {0:?}: repository name longer than 255 characters")]
    TooLong(String),
    #[error("invalid reference format {reference:?}: bad {part} {value:?}")]
    Invalid {
        reference: String,
        part: &'static str,
        value: String,
    },
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run.
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A registry host: DNS-ish labels or an IPv4 address, `[ipv6]`, optional `:port`.
fn valid_host(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (None, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
    }
}

fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

impl Reference {
    /// Parses and normalises `s` the way `docker pull` does.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let invalid = |part: &'static str, value: &str| ReferenceError::Invalid {
            reference: s.to_string(),
            part,
            value: value.to_string(),
        };
        if s.is_empty() {
            return Err(ReferenceError::Empty(s.to_string()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| invalid("digest", d))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before is a port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(invalid("tag", t));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty(s.to_string()));
        }
        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.bytes().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_host(&registry) {
            return Err(invalid("registry host", &registry));
        }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            registry = DEFAULT_REGISTRY.to_string();
        }
        if repository.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.to_string()));
        }
        for c in repository.split('/') {
            if !valid_component(c) {
                return Err(invalid("repository path component", c));
            }
        }
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong(s.to_string()));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What the manifest is fetched by: the digest when known, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The short form Docker prints: `busybox:latest`, `user/app:1`, `127.0.0.1:5000/app:1`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        let mut s = name;
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository at a digest.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            full("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            full("index.docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(full("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(
            full("localhost:5000/a/b/c:v1.2-x_y"),
            "localhost:5000/a/b/c:v1.2-x_y"
        );
        assert_eq!(full("quay.io/org/app"), "quay.io/org/app:latest");
        assert_eq!(full("[::1]:5000/app:1"), "[::1]:5000/app:1");
        assert_eq!(full("a__b/c-d--e.f"), "docker.io/a__b/c-d--e.f:latest");
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().as_str(), D);
        assert_eq!(r.object(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = Reference::parse(&format!("127.0.0.1:5000/app:1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.object(), D, "the digest wins over the tag");
        assert_eq!(r.registry, "127.0.0.1:5000");
    }

    #[test]
    fn host_rules() {
        // A first component without '.', ':' or "localhost" is a path.
        let r = Reference::parse("myhost/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "myhost/app")
        );
        let r = Reference::parse("my.host/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("my.host", "app")
        );
        let r = Reference::parse("myhost:5000/app").unwrap();
        assert_eq!(r.registry, "myhost:5000");
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!(r.registry, "localhost");
        let r = Reference::parse("Registry/app").unwrap();
        assert_eq!(r.registry, "Registry");
    }

    #[test]
    fn familiar_forms() {
        let f = |s: &str| Reference::parse(s).unwrap().familiar();
        assert_eq!(f("busybox"), "busybox:latest");
        assert_eq!(f("docker.io/user/app:2"), "user/app:2");
        assert_eq!(f("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-tag",
            "busybox@sha256:abc",
            "busybox@md5:00",
            "-app",
            "app-",
            "a//b",
            "a/b/",
            "app:1:2",
            "a..b",
            "a___b",
            "127.0.0.1:99999999/app",
            "host:po/app",
            "a b",
            ":tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(matches!(
            Reference::parse("Busybox"),
            Err(ReferenceError::Uppercase(_))
        ));
        let long = format!("quay.io/{}", "a".repeat(300));
        assert!(matches!(
            Reference::parse(&long),
            Err(ReferenceError::TooLong(_))
        ));
        let e = Reference::parse("busybox:bad tag").unwrap_err().to_string();
        assert!(e.contains("busybox:bad tag") && e.contains("tag"), "{e}");
    }
}
