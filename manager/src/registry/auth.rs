//! Registry credentials: `WWW-Authenticate` challenges, and the `docker login` style credential
//! file (`{"auths": {"HOST": {"auth": base64("user:pass")}}}`).
//!
//! Kapsel's own file is `$KAPSEL_CONFIG` or `~/.kapsel/config.json`; `~/.docker/config.json`
//! (or `$DOCKER_CONFIG/config.json`) is read as a fallback and never written.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.username)
    }
}

impl Credentials {
    /// `Basic <base64(user:pass)>`.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64_encode(format!("{}:{}", self.username, self.password).as_bytes())
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("credential file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("credential file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no home directory to keep credentials in: set KAPSEL_CONFIG or HOME")]
    NoHome,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value: `Bearer realm="https://auth/token",service="reg",scope="repository:app:pull"`
/// or `Basic realm="Registry Realm"`. Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    let params = parse_params(rest);
    let get = |k: &str| params.get(k).cloned();
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic {
            realm: get("realm"),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k=v, k="quoted, \"value\""` → map with lowercase keys.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                // Push whole UTF-8 characters.
                let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1; // closing quote
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The key Docker uses for Docker Hub in `auths`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

fn keys_for(host: &str) -> Vec<String> {
    if host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io" {
        return vec![
            DOCKER_HUB_KEY.to_string(),
            "docker.io".to_string(),
            "index.docker.io".to_string(),
        ];
    }
    vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
        format!("https://{host}/v2/"),
    ]
}

fn write_key(host: &str) -> String {
    if host == "docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        host.to_string()
    }
}

/// A credential file (kapsel's own or Docker's), keeping fields it does not know.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    doc: Value,
}

impl ConfigFile {
    /// Kapsel's credential file: `$KAPSEL_CONFIG`, else `~/.kapsel/config.json`.
    pub fn default_path() -> Result<PathBuf, AuthError> {
        if let Some(p) = std::env::var_os("KAPSEL_CONFIG").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(AuthError::NoHome)?;
        Ok(Path::new(&home).join(".kapsel/config.json"))
    }

    /// Docker's file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn docker_path() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
            return Some(Path::new(&d).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(&h).join(".docker/config.json"))
    }

    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<ConfigFile, AuthError> {
        let doc = match fs::read(path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Value::Object(Default::default()),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AuthError::Invalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Value::Object(Default::default()),
            Err(source) => {
                return Err(AuthError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        if !doc.is_object() {
            return Err(AuthError::Invalid {
                path: path.to_path_buf(),
                reason: "not a JSON object".into(),
            });
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            doc,
        })
    }

    /// The credentials stored for `host` (`127.0.0.1:5000`, `docker.io`).
    pub fn get(&self, host: &str) -> Option<Credentials> {
        let auths = self.doc.get("auths")?.as_object()?;
        for k in keys_for(host) {
            let Some(entry) = auths.get(&k) else { continue };
            if let Some(a) = entry.get("auth").and_then(Value::as_str) {
                let raw = base64_decode(a)?;
                let s = String::from_utf8(raw).ok()?;
                let (u, p) = s.split_once(':')?;
                return Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                });
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(Value::as_str),
                entry.get("password").and_then(Value::as_str),
            ) {
                return Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                });
            }
        }
        None
    }

    pub fn set(&mut self, host: &str, creds: &Credentials) {
        let obj = self.doc.as_object_mut().expect("checked at load");
        let auths = obj
            .entry("auths")
            .or_insert_with(|| Value::Object(Default::default()));
        if !auths.is_object() {
            *auths = Value::Object(Default::default());
        }
        let auth = base64_encode(format!("{}:{}", creds.username, creds.password).as_bytes());
        auths
            .as_object_mut()
            .expect("just made an object")
            .insert(write_key(host), serde_json::json!({ "auth": auth }));
    }

    /// Removes the credentials of `host`; true when there were some.
    pub fn remove(&mut self, host: &str) -> bool {
        let Some(auths) = self.doc.get_mut("auths").and_then(Value::as_object_mut) else {
            return false;
        };
        let mut removed = false;
        for k in keys_for(host) {
            removed |= auths.remove(&k).is_some();
        }
        removed
    }

    /// Writes the file atomically, mode 0600, creating its directory (0700).
    pub fn save(&self) -> Result<(), AuthError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io_err = |source| AuthError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let data = serde_json::to_vec_pretty(&self.doc).expect("JSON value serialises");
        let res = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map_err(io_err)
    }
}

/// Credentials for `host` from kapsel's file, else Docker's.
pub fn lookup(host: &str) -> Result<Option<Credentials>, AuthError> {
    let own = ConfigFile::load(&ConfigFile::default_path()?)?;
    if let Some(c) = own.get(host) {
        return Ok(Some(c));
    }
    if let Some(p) = ConfigFile::docker_path() {
        // A broken Docker file must not break kapsel: it is only a fallback.
        if let Ok(d) = ConfigFile::load(&p) {
            return Ok(d.get(host));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }
        );
        // Spaces after commas, unquoted values, comma inside a quoted scope, escapes.
        let c = parse_challenge(
            r#"bearer  realm=http://127.0.0.1:9/token, scope="repository:a:pull,push repository:b:pull", error="insufficient_scope", service="x\"y""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "http://127.0.0.1:9/token".into(),
                service: Some("x\"y".into()),
                scope: Some("repository:a:pull,push repository:b:pull".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Bearer service="s""#),
            None,
            "realm is required"
        );
    }

    #[test]
    fn basic_and_unknown_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(
            parse_challenge("Basic"),
            Some(Challenge::Basic { realm: None })
        );
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
    }

    #[test]
    fn base64_round_trip() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert!(base64_decode("a*b").is_none());
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        assert_eq!(c.basic_header(), "Basic dTpwOnc=");
    }

    #[test]
    fn config_file_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"q.io":{"username":"a","password":"b"}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        let mut f = ConfigFile::load(&path).unwrap();
        assert_eq!(f.get("docker.io").unwrap().username, "hub");
        assert_eq!(f.get("docker.io").unwrap().password, "secret");
        assert_eq!(f.get("q.io").unwrap().password, "b");
        assert!(f.get("127.0.0.1:5000").is_none());
        let c = Credentials {
            username: "kreg".into(),
            password: "pw".into(),
        };
        f.set("127.0.0.1:5000", &c);
        f.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["auths"]["127.0.0.1:5000"]["auth"],
            base64_encode(b"kreg:pw")
        );
        assert_eq!(v["credsStore"], "desktop", "unknown fields are kept");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut f = ConfigFile::load(&path).unwrap();
        assert_eq!(f.get("127.0.0.1:5000"), Some(c));
        assert!(f.remove("127.0.0.1:5000"));
        assert!(!f.remove("127.0.0.1:5000"));
        assert!(ConfigFile::load(&dir.path().join("missing.json"))
            .unwrap()
            .get("x")
            .is_none());
        std::fs::write(&path, "[1]").unwrap();
        assert!(ConfigFile::load(&path).is_err());
    }
}
