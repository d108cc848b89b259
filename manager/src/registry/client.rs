//! One registry repository as the distribution API sees it: the transport (HTTPS; loopback
//! registries in plain HTTP unless they answer like TLS servers; insecure ones in HTTPS
//! unverified or plain HTTP), requests with authentication (anonymous, basic, bearer tokens
//! cached per scope) and the registry's errors decoded.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::auth::{parse_challenge, Challenge, Credentials};
use super::http::{self, Body, Response, Scheme, Url};
use super::tls::{Tls, TlsError};
use super::{Error, Reference};
use crate::content::Store;
use crate::oci::Digest;

/// Largest error document or token response read.
const SMALL_BODY: usize = 1 << 20;

/// What a request body is, re-creatable for a retry after an authentication challenge.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a stored blob from `offset`.
    Blob {
        store: &'a dyn Store,
        digest: &'a Digest,
        offset: u64,
        len: u64,
    },
}

impl<'a> Source<'a> {
    fn body(&self) -> Result<Body<'a>, crate::content::Error> {
        Ok(match *self {
            Source::Empty => Body::Empty,
            Source::Bytes(b) => Body::Bytes(b),
            Source::Blob {
                store,
                digest,
                offset,
                len,
            } => {
                let r = store.reader(digest)?;
                Body::Reader(Box::new(OffsetReader { r, pos: offset }), len)
            }
        })
    }
}

struct OffsetReader {
    r: Box<dyn crate::content::ReadAt>,
    pos: u64,
}

impl Read for OffsetReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone)]
enum Mode {
    /// No challenge seen yet.
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A client for one repository of one registry.
pub(crate) struct Session {
    http: http::Client,
    scheme: Mutex<Scheme>,
    /// A loopback registry spoken to in plain HTTP until its first answer is seen.
    detect_tls: AtomicBool,
    /// Held by the request that finds out; requests sent meanwhile (in parallel) wait for it.
    detecting: Mutex<()>,
    /// `host:port` to connect to (Docker Hub's API lives on `registry-1.docker.io`).
    api_host: String,
    pub reference: Reference,
    /// What errors name: the reference, or the registry for a session without a repository.
    subject: String,
    creds: Option<Credentials>,
    mode: Mutex<Mode>,
    tokens: Mutex<HashMap<String, String>>,
}

/// True for `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub(crate) fn is_loopback(host: &str) -> bool {
    let h = if let Some(r) = host.strip_prefix('[') {
        r.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Whether `host` is listed as insecure (`host:port`, or `host` for every port).
fn listed_insecure(host: &str, insecure: &[String]) -> bool {
    let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    insecure
        .iter()
        .map(|i| {
            i.trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
        })
        .any(|i| i == host || i == bare)
}

/// How a registry is reached. Docker tries HTTPS first for every registry and allows plain
/// HTTP after it for insecure ones (127.0.0.0/8 is insecure by default there, with
/// verification skipped). Kapsel differs for loopback registries: they are spoken to in plain
/// HTTP first, so one that does not speak TLS sees exactly the requests it saw before HTTPS
/// existed (a TLS hello sent first to a server that waits for a request line would stall until
/// it gave up); one whose first answer shows it speaks TLS is then spoken to in HTTPS, with its
/// certificate verified (so a private CA goes in its certs.d directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// HTTPS with the certificate verified, nothing else.
    Https,
    /// Loopback: plain HTTP; HTTPS (verified) once the registry's answer shows it speaks TLS.
    HttpOrHttps,
    /// Listed with `--insecure-registry`: HTTPS without verification, else plain HTTP.
    InsecureHttpsOrHttp,
}

pub(crate) fn transport(host: &str, insecure: &[String]) -> Transport {
    if listed_insecure(host, insecure) {
        Transport::InsecureHttpsOrHttp
    } else if is_loopback(host) {
        Transport::HttpOrHttps
    } else {
        Transport::Https
    }
}

/// Marks the plain-HTTP-or-TLS question answered when dropped.
struct FoundOut<'a>(&'a AtomicBool);

impl Drop for FoundOut<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Whether an error of the HTTP client is a TLS server refusing a certificate (as opposed to a
/// handshake that failed because the peer does not speak TLS).
fn refused_tls(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<TlsError>())
        .is_some_and(|t| !t.allows_plain_http_fallback())
}

/// The TLS failure inside an I/O error of the HTTP client, if that is what it is.
fn tls_error(e: std::io::Error) -> Result<TlsError, std::io::Error> {
    e.downcast::<TlsError>()
}

pub(crate) fn scope_pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

pub(crate) fn scope_push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct RegistryErrors {
    #[serde(default)]
    errors: Vec<RegistryError>,
}

#[derive(serde::Deserialize)]
struct RegistryError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

impl Session {
    /// A session for `reference`'s repository. For an insecure registry, connects once to find
    /// out whether it speaks TLS (the connection is kept for the first request).
    pub fn new(
        reference: &Reference,
        insecure: &[String],
        certs_dirs: &[PathBuf],
        creds: Option<Credentials>,
    ) -> Result<Session, Error> {
        let host = &reference.registry;
        let api_host = if host == super::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io".to_string()
        } else {
            host.clone()
        };
        // What errors name: the image, or the registry alone (login).
        let subject = if reference.repository.is_empty() {
            host.clone()
        } else {
            reference.to_string()
        };
        let tls_err = |source| Error::Tls {
            reference: subject.clone(),
            source,
        };
        let transport = transport(host, insecure);
        let verify = transport != Transport::InsecureHttpsOrHttp;
        let http = http::Client::new(Tls::for_registry(host, certs_dirs, verify).map_err(tls_err)?);
        let scheme = match transport {
            Transport::Https => Scheme::Https,
            Transport::HttpOrHttps => Scheme::Http,
            Transport::InsecureHttpsOrHttp => {
                let probe = Url::parse(&format!("https://{api_host}/v2/")).map_err(|source| {
                    Error::Connection {
                        reference: subject.clone(),
                        url: api_host.clone(),
                        source,
                    }
                })?;
                match http.probe(&probe).map_err(tls_error) {
                    Ok(()) => Scheme::Https,
                    Err(Ok(e)) if !e.allows_plain_http_fallback() => return Err(tls_err(e)),
                    // Not TLS, or nothing listening: plain HTTP (whose error, if any, is the
                    // one reported).
                    Err(Ok(e)) => {
                        tracing::debug!("{api_host}: {e}; trying plain HTTP");
                        Scheme::Http
                    }
                    Err(Err(_)) => Scheme::Http,
                }
            }
        };
        Ok(Session {
            http,
            scheme: Mutex::new(scheme),
            detect_tls: AtomicBool::new(transport == Transport::HttpOrHttps),
            detecting: Mutex::new(()),
            api_host,
            reference: reference.clone(),
            subject,
            creds,
            mode: Mutex::new(Mode::Unknown),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn host(&self) -> &str {
        &self.reference.registry
    }

    pub fn repo(&self) -> &str {
        &self.reference.repository
    }

    pub fn url(&self, path: &str) -> Result<Url, Error> {
        let scheme = if *self.scheme.lock().expect("scheme lock") == Scheme::Http {
            "http"
        } else {
            "https"
        };
        Url::parse(&format!("{scheme}://{}{path}", self.api_host))
            .map_err(|e| self.conn_err(path, e))
    }

    pub fn conn_err(&self, what: &str, source: std::io::Error) -> Error {
        match tls_error(source) {
            Ok(source) => Error::Tls {
                reference: self.subject.clone(),
                source,
            },
            Err(source) => Error::Connection {
                reference: self.subject.clone(),
                url: format!("{}{what}", self.api_host),
                source,
            },
        }
    }

    fn authorization(&self, scopes: &[String]) -> Result<Option<String>, Error> {
        let mode = self.mode.lock().expect("mode lock").clone();
        match mode {
            Mode::Unknown => Ok(None),
            Mode::Basic => Ok(self.creds.as_ref().map(Credentials::basic_header)),
            Mode::Bearer { realm, service } => {
                let key = scopes.join(" ");
                if let Some(t) = self.tokens.lock().expect("token lock").get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.fetch_token(&realm, service.as_deref(), scopes)?;
                self.tokens
                    .lock()
                    .expect("token lock")
                    .insert(key, t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Asks the token server named by a Bearer challenge for a token covering `scopes`.
    pub fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, Error> {
        let mut q = Vec::new();
        if let Some(s) = service {
            q.push(format!("service={}", url_encode(s)));
        }
        for s in scopes {
            q.push(format!("scope={}", url_encode(s)));
        }
        if let Some(c) = &self.creds {
            q.push(format!("account={}", url_encode(&c.username)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let full = if q.is_empty() {
            realm.to_string()
        } else {
            format!("{realm}{sep}{}", q.join("&"))
        };
        let url = Url::parse(&full).map_err(|e| self.conn_err(realm, e))?;
        let mut headers = Vec::new();
        if let Some(c) = &self.creds {
            headers.push(("Authorization", c.basic_header()));
        }
        let mut resp = self
            .http
            .request("GET", &url, &headers, Body::Empty)
            .map_err(|e| self.conn_err(realm, e))?;
        let body = resp
            .read_body(SMALL_BODY)
            .map_err(|e| self.conn_err(realm, e))?;
        match resp.status {
            200 => {}
            401 | 403 => {
                return Err(Error::AuthRequired {
                    reference: self.subject.clone(),
                    host: self.host().to_string(),
                    detail: format!(
                        "the token server {realm} refused {}",
                        if self.creds.is_some() {
                            "the credentials"
                        } else {
                            "anonymous access"
                        }
                    ),
                })
            }
            s => {
                return Err(Error::Registry {
                    reference: self.subject.clone(),
                    status: s,
                    code: "TOKEN".into(),
                    message: format!(
                        "token server {realm}: {}",
                        String::from_utf8_lossy(&body).trim()
                    ),
                })
            }
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            reference: self.subject.clone(),
            what: format!("token server {realm} sent an unreadable answer: {e}"),
        })?;
        let tok = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if tok.is_empty() {
            return Err(Error::Protocol {
                reference: self.subject.clone(),
                what: format!("token server {realm} sent no token"),
            });
        }
        Ok(tok)
    }

    /// Sends one request. The first one to a loopback registry goes in plain HTTP; when the
    /// answer shows the registry speaks TLS (Go's bare `400` "client sent an HTTP request to an
    /// HTTPS server", a reply that is not HTTP, or a close without a reply), the session turns
    /// to HTTPS and the request is sent again there.
    fn send(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Source<'_>,
    ) -> Result<Response, Error> {
        let guard = self
            .detect_tls
            .load(Ordering::SeqCst)
            .then(|| self.detecting.lock().expect("detect lock"));
        // Checked again under the lock: the request that held it may have found out.
        let first = guard.is_some() && self.detect_tls.load(Ordering::SeqCst);
        if !first {
            drop(guard);
        }
        // Dropped before the guard: the answer is known before waiting requests go on.
        let _found_out = first.then_some(FoundOut(&self.detect_tls));
        // A URL made before the session turned to HTTPS.
        let url = &self.on_scheme(url);
        let first = first && url.scheme == Scheme::Http;
        let b = body.body().map_err(Error::Store)?;
        let r = self.http.request(method, url, headers, b);
        let maybe_tls = first
            && match &r {
                Ok(resp) => resp.status == 400 && resp.headers.is_empty(),
                Err(e) => matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                ),
            };
        if !maybe_tls {
            return r.map_err(|e| self.conn_err(&url.path, e));
        }
        *self.scheme.lock().expect("scheme lock") = Scheme::Https;
        let tls_url = self.on_scheme(url);
        let b = body.body().map_err(Error::Store)?;
        let result = self.http.request(method, &tls_url, headers, b);
        if result.as_ref().is_err_and(|e| !refused_tls(e)) {
            // Not TLS either: the plain answer stands.
            *self.scheme.lock().expect("scheme lock") = Scheme::Http;
            return r.map_err(|e| self.conn_err(&url.path, e));
        }
        tracing::debug!("{}: answers like a TLS server: using HTTPS", self.api_host);
        match result {
            Ok(resp) => {
                if let Ok(plain) = r {
                    plain.discard();
                }
                Ok(resp)
            }
            // It speaks TLS, and its certificate (or ours) was refused.
            Err(e) => Err(self.conn_err(&tls_url.path, e)),
        }
    }

    /// `url` on HTTPS when it points at the registry and the session has turned to HTTPS.
    fn on_scheme(&self, url: &Url) -> Url {
        let https = *self.scheme.lock().expect("scheme lock") == Scheme::Https;
        let api = Url::parse(&format!("http://{}/", self.api_host));
        if url.scheme == Scheme::Http
            && https
            && api.is_ok_and(|a| a.authority() == url.authority())
        {
            if let Ok(u) = Url::parse(&format!("https://{}{}", self.api_host, url.path)) {
                return u;
            }
        }
        url.clone()
    }

    /// Sends a request with credentials; answers one 401 challenge by authenticating and
    /// sending again. A 401 after that is [`Error::AuthRequired`].
    pub fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Source<'_>,
        scopes: &[String],
    ) -> Result<Response, Error> {
        let mut challenged = false;
        loop {
            let mut hs: Vec<(&str, String)> = headers.to_vec();
            if let Some(a) = self.authorization(scopes)? {
                hs.push(("Authorization", a));
            }
            let resp = self.send(method, url, &hs, body)?;
            if resp.status != 401 {
                return Ok(resp);
            }
            let challenge = resp
                .headers_named("www-authenticate")
                .find_map(parse_challenge);
            resp.discard();
            let detail = if self.creds.is_some() {
                "the registry refused the credentials".to_string()
            } else {
                "no credentials for this registry".to_string()
            };
            if challenged {
                return Err(Error::AuthRequired {
                    reference: self.subject.clone(),
                    host: self.host().to_string(),
                    detail,
                });
            }
            challenged = true;
            match challenge {
                Some(Challenge::Basic { .. }) if self.creds.is_some() => {
                    *self.mode.lock().expect("mode lock") = Mode::Basic;
                }
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    // The scopes asked for, plus the one the registry named.
                    let mut want = scopes.to_vec();
                    if let Some(s) = scope {
                        for s in s.split(' ') {
                            if !want.iter().any(|w| w == s) {
                                want.push(s.to_string());
                            }
                        }
                    }
                    let t = self.fetch_token(&realm, service.as_deref(), &want)?;
                    *self.mode.lock().expect("mode lock") = Mode::Bearer { realm, service };
                    self.tokens
                        .lock()
                        .expect("token lock")
                        .insert(scopes.join(" "), t);
                }
                _ => {
                    return Err(Error::AuthRequired {
                        reference: self.subject.clone(),
                        host: self.host().to_string(),
                        detail,
                    })
                }
            }
        }
    }

    /// The registry's error for an unexpected answer, with the reference it concerns.
    pub fn error(&self, mut resp: Response, what: &str) -> Error {
        let status = resp.status;
        let body = resp.read_body(SMALL_BODY).unwrap_or_default();
        let parsed: Option<RegistryErrors> = serde_json::from_slice(&body).ok();
        let first = parsed.and_then(|p| p.errors.into_iter().next());
        let (code, message) = match first {
            Some(e) => (e.code, e.message),
            None => (
                String::new(),
                String::from_utf8_lossy(&body[..body.len().min(512)])
                    .trim()
                    .to_string(),
            ),
        };
        let reference = what.to_string();
        match (status, code.as_str()) {
            (404, _) | (_, "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN") => {
                Error::NotFound { reference }
            }
            (401, _) | (_, "UNAUTHORIZED") => Error::AuthRequired {
                reference,
                host: self.host().to_string(),
                detail: message,
            },
            (403, _) | (_, "DENIED") => Error::Denied { reference, message },
            _ => Error::Registry {
                reference,
                status,
                code,
                message: if message.is_empty() {
                    format!("HTTP {status}")
                } else {
                    message
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_in_dockers_order() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5301",
            "127.1.2.3:1",
            "[::1]:5000",
        ] {
            assert_eq!(transport(h, &[]), Transport::HttpOrHttps, "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "registry.local:5000",
            "localhost.example:1",
        ] {
            assert_eq!(transport(h, &[]), Transport::Https, "{h}");
        }
        let insecure = vec![
            "registry.local:5000".to_string(),
            "10.0.0.1".to_string(),
            "127.0.0.1:5999".to_string(),
        ];
        let t = |h| transport(h, &insecure);
        assert_eq!(t("registry.local:5000"), Transport::InsecureHttpsOrHttp);
        assert_eq!(t("registry.local:5001"), Transport::Https);
        assert_eq!(t("10.0.0.1:5000"), Transport::InsecureHttpsOrHttp);
        assert_eq!(t("127.0.0.1:5999"), Transport::InsecureHttpsOrHttp);
        assert_eq!(t("127.0.0.1:5998"), Transport::HttpOrHttps);
    }
}
