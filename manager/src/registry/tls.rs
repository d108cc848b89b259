//! TLS for registries, trusted the way Docker trusts them.
//!
//! A registry's certificate is verified against the system CA store (Debian's
//! `/etc/ssl/certs`, through libssl's default paths) plus the registry's own directory in each
//! certificates root (`/etc/kapsel/certs.d/<host[:port]>/`, then `/etc/docker/certs.d/...`):
//! `*.crt` files there are extra CAs, a `*.cert` file with the `*.key` of the same name is the
//! client certificate presented to the registry. The host name (or IP address) the registry is
//! reached by must match the certificate. A failed verification is explained: which registry,
//! what was wrong, and where its CA certificate goes.

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use openssl::error::ErrorStack;
use openssl::ssl::{
    HandshakeError, SslConnector, SslFiletype, SslMethod, SslOptions, SslStream, SslVerifyMode,
};
use openssl::x509::X509;

/// Where per-registry certificates are looked for when nothing else is configured: Kapsel's
/// own directory, then Docker's (so a Docker user's certificates work as they are).
pub const DEFAULT_CERTS_DIRS: &[&str] = &["/etc/kapsel/certs.d", "/etc/docker/certs.d"];

pub fn default_certs_dirs() -> Vec<PathBuf> {
    DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect()
}

// X509_V_ERR_* codes (openssl/x509_vfy.h) that mean "no trusted CA signed this".
const UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
const DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
const SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
const UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
const UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;
// ...and the ones that mean "signed, but for another name".
const HOSTNAME_MISMATCH: i32 = 62;
const IP_ADDRESS_MISMATCH: i32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "x509: the certificate of registry {host} is signed by an unknown authority ({reason}): \
         put the registry's CA certificate in {certs_dir}/{host}/ca.crt, or add \
         --insecure-registry {host} to kapseld to skip verification"
    )]
    UnknownAuthority {
        host: String,
        certs_dir: String,
        reason: String,
    },
    #[error(
        "x509: the certificate of registry {host} is not valid for {name} ({reason}): reach the \
         registry by a name its certificate lists, or issue it a certificate for {name}"
    )]
    NameMismatch {
        host: String,
        name: String,
        reason: String,
    },
    #[error(
        "{server} refused the client certificate ({reason}): put a client certificate the \
         registry accepts in {certs_dir}/{host}/client.cert with its key in client.key"
    )]
    ClientCertRefused {
        server: String,
        host: String,
        certs_dir: String,
        reason: String,
    },
    #[error("x509: the certificate of registry {host} was refused: {reason}")]
    Refused { host: String, reason: String },
    #[error("TLS handshake with {server} failed: {source}")]
    Handshake {
        server: String,
        #[source]
        source: openssl::ssl::Error,
    },
    #[error("TLS handshake with {server} timed out")]
    HandshakeTimeout { server: String },
    #[error("{}: cannot read the registry certificates: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a usable PEM certificate: {source}", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: ErrorStack,
    },
    #[error("{}: holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{}: the client certificate has no key {} beside it (CA certificates must end in .crt)",
        cert.display(), key.display()
    )]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("{}: the client key has no certificate {} beside it", key.display(), cert.display())]
    MissingCert { key: PathBuf, cert: PathBuf },
    #[error("{}: cannot use the client certificate and key: {source}", cert.display())]
    ClientCert {
        cert: PathBuf,
        #[source]
        source: ErrorStack,
    },
    #[error("setting up TLS for registry {host}: {source}")]
    Setup {
        host: String,
        #[source]
        source: ErrorStack,
    },
}

impl TlsError {
    /// True for a handshake that failed before any certificate was judged (the peer does not
    /// speak TLS, or closed the connection): a registry allowed plain HTTP is then tried over
    /// HTTP, as Docker does. A refused certificate never falls back.
    pub fn allows_plain_http_fallback(&self) -> bool {
        matches!(
            self,
            TlsError::Handshake { .. } | TlsError::HandshakeTimeout { .. }
        )
    }
}

/// How connections to one registry (and the token server and blob storage it sends the client
/// to) are secured.
pub struct Tls {
    connector: SslConnector,
    /// `host[:port]` of the registry, as in the image reference (the certs.d directory name).
    registry: String,
    /// Whether the certificate chain and name are checked (off for `--insecure-registry`).
    verify: bool,
    /// The first certificates root, named in the advice of an error.
    certs_dir: PathBuf,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("registry", &self.registry)
            .field("verify", &self.verify)
            .finish()
    }
}

impl Tls {
    /// The trust for `registry` (`host[:port]`): the system CAs plus what the registry's
    /// directory in each of `certs_dirs` holds. `verify: false` skips the certificate checks
    /// (client certificates are still presented).
    pub fn for_registry(
        registry: &str,
        certs_dirs: &[PathBuf],
        verify: bool,
    ) -> Result<Tls, TlsError> {
        let setup = |source| TlsError::Setup {
            host: registry.to_string(),
            source,
        };
        // Loads the system store (libssl's default CA file and directory) and verifies peers.
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(setup)?;
        for root in certs_dirs {
            load_registry_dir(&mut b, &root.join(registry))?;
        }
        if !verify {
            b.set_verify(SslVerifyMode::NONE);
        }
        // A server that closes without close_notify ends a read-to-close body as a plain TCP
        // close would; bodies with a length or chunks still detect truncation themselves.
        b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
        Ok(Tls {
            connector: b.build(),
            registry: registry.to_string(),
            verify,
            certs_dir: certs_dirs
                .first()
                .cloned()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CERTS_DIRS[0])),
        })
    }

    /// Runs the TLS handshake on `tcp` for `host` (the name the URL uses, without brackets;
    /// an IP address is checked against the certificate's IP SANs).
    pub fn connect(&self, host: &str, port: u16, tcp: TcpStream) -> Result<TlsStream, TlsError> {
        let server = format!("{host}:{port}");
        let mut cfg = self
            .connector
            .configure()
            .map_err(|source| TlsError::Setup {
                host: self.registry.clone(),
                source,
            })?;
        cfg.set_verify_hostname(self.verify);
        if !self.verify {
            cfg.set_verify(SslVerifyMode::NONE);
        }
        match cfg.connect(host, tcp) {
            Ok(inner) => Ok(TlsStream {
                inner,
                server,
                registry: self.registry.clone(),
                certs_dir: self.certs_dir.display().to_string(),
            }),
            Err(HandshakeError::SetupFailure(source)) => Err(TlsError::Setup {
                host: self.registry.clone(),
                source,
            }),
            Err(HandshakeError::WouldBlock(_)) => Err(TlsError::HandshakeTimeout { server }),
            Err(HandshakeError::Failure(mid)) => {
                let v = mid.ssl().verify_result();
                if v == openssl::x509::X509VerifyResult::OK {
                    let source = mid.into_error();
                    return Err(match client_cert_alert(&source) {
                        Some(reason) => TlsError::ClientCertRefused {
                            server,
                            host: self.registry.clone(),
                            certs_dir: self.certs_dir.display().to_string(),
                            reason,
                        },
                        None => TlsError::Handshake { server, source },
                    });
                }
                let reason = v.error_string().to_string();
                // The registry itself is named by its reference; another server (a token
                // server, blob storage) by the address it was reached at.
                let named = if self.registry == server || self.registry == host && port == 443 {
                    self.registry.clone()
                } else {
                    server
                };
                Err(match v.as_raw() {
                    UNABLE_TO_GET_ISSUER_CERT
                    | DEPTH_ZERO_SELF_SIGNED_CERT
                    | SELF_SIGNED_CERT_IN_CHAIN
                    | UNABLE_TO_GET_ISSUER_CERT_LOCALLY
                    | UNABLE_TO_VERIFY_LEAF_SIGNATURE => TlsError::UnknownAuthority {
                        host: named,
                        certs_dir: self.certs_dir.display().to_string(),
                        reason,
                    },
                    HOSTNAME_MISMATCH | IP_ADDRESS_MISMATCH => TlsError::NameMismatch {
                        host: named,
                        name: host.to_string(),
                        reason,
                    },
                    _ => TlsError::Refused {
                        host: named,
                        reason,
                    },
                })
            }
        }
    }
}

/// The TLS alert a server sends when it does not accept the client's certificate (or got
/// none), if `e` is one.
fn client_cert_alert(e: &openssl::ssl::Error) -> Option<String> {
    e.ssl_error()?.errors().iter().find_map(|x| {
        x.reason()
            .filter(|r| {
                r.contains("alert bad certificate")
                    || r.contains("alert certificate required")
                    || r.contains("alert unknown ca")
            })
            .map(str::to_string)
    })
}

/// A TLS connection whose errors say when the server refused the client certificate (with
/// TLS 1.3 that comes as an alert on the first read, after the handshake).
pub struct TlsStream {
    inner: SslStream<TcpStream>,
    server: String,
    registry: String,
    certs_dir: String,
}

impl TlsStream {
    /// The TCP connection under the TLS session.
    pub fn tcp(&self) -> &TcpStream {
        self.inner.get_ref()
    }

    fn explain(&self, e: io::Error) -> io::Error {
        let alert = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<openssl::ssl::Error>())
            .and_then(client_cert_alert);
        match alert {
            Some(reason) => io::Error::other(TlsError::ClientCertRefused {
                server: self.server.clone(),
                host: self.registry.clone(),
                certs_dir: self.certs_dir.clone(),
                reason,
            }),
            None => e,
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| self.explain(e))
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.explain(e))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.explain(e))
    }
}

/// Adds the CAs (`*.crt`) and the client certificate (`*.cert` + `*.key`) of one registry
/// directory; a missing directory adds nothing.
fn load_registry_dir(
    b: &mut openssl::ssl::SslConnectorBuilder,
    dir: &Path,
) -> Result<(), TlsError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(TlsError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
    files.sort();
    for path in &files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let pem = fs::read(path).map_err(|source| TlsError::ReadDir {
                    path: path.clone(),
                    source,
                })?;
                let certs = X509::stack_from_pem(&pem).map_err(|source| TlsError::Certificate {
                    path: path.clone(),
                    source,
                })?;
                if certs.is_empty() {
                    return Err(TlsError::NoCertificate { path: path.clone() });
                }
                for c in certs {
                    b.cert_store_mut()
                        .add_cert(c)
                        .map_err(|source| TlsError::Certificate {
                            path: path.clone(),
                            source,
                        })?;
                }
            }
            Some("cert") => {
                let key = path.with_extension("key");
                if !key.is_file() {
                    return Err(TlsError::MissingKey {
                        cert: path.clone(),
                        key,
                    });
                }
                let client = |source| TlsError::ClientCert {
                    cert: path.clone(),
                    source,
                };
                b.set_certificate_chain_file(path).map_err(client)?;
                b.set_private_key_file(&key, SslFiletype::PEM)
                    .map_err(client)?;
                b.check_private_key().map_err(client)?;
            }
            Some("key") => {
                let cert = path.with_extension("cert");
                if !cert.is_file() {
                    return Err(TlsError::MissingCert {
                        key: path.clone(),
                        cert,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::client::{Session, Source};
    use crate::registry::http::{Body, Client, Scheme, Url};
    use crate::registry::{Error, Reference};
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::ssl::SslAcceptor;
    use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
    use openssl::x509::X509NameBuilder;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A CA (when `issuer` is `None`) or a leaf for IP 127.0.0.1 signed by `issuer`.
    fn cert(cn: &str, issuer: Option<&(X509, PKey<Private>)>) -> (X509, PKey<Private>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(if issuer.is_some() { 2 } else { 1 }).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&*name, |i| i.0.subject_name()))
            .unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        match issuer {
            None => {
                b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                    .unwrap();
                b.append_extension(KeyUsage::new().key_cert_sign().build().unwrap())
                    .unwrap();
            }
            Some(i) => {
                let san = SubjectAlternativeName::new()
                    .ip("127.0.0.1")
                    .build(&b.x509v3_context(Some(&i.0), None))
                    .unwrap();
                b.append_extension(san).unwrap();
            }
        }
        b.sign(issuer.map_or(&key, |i| &i.1), MessageDigest::sha256())
            .unwrap();
        (b.build(), key)
    }

    /// A TLS server on 127.0.0.1 answering each request with `body`; serves `conns`
    /// connections.
    fn serve_body(leaf: &(X509, PKey<Private>), conns: usize, body: &'static str) -> u16 {
        let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        a.set_certificate(&leaf.0).unwrap();
        a.set_private_key(&leaf.1).unwrap();
        let a = a.build();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().take(conns) {
                let Ok(mut t) = a.accept(s.unwrap()) else {
                    continue;
                };
                let mut r = io::BufReader::new(&mut t);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = t.write_all(reply.as_bytes());
                let _ = t.shutdown();
            }
        });
        port
    }

    /// A TLS server for 127.0.0.1 (see [`serve_body`]) and a certificates root holding its CA
    /// for `127.0.0.1:PORT`: (CA, port, `127.0.0.1:PORT`, root).
    fn trusted_server(
        conns: usize,
        body: &'static str,
    ) -> ((X509, PKey<Private>), u16, String, tempfile::TempDir) {
        let ca = cert("kapsel-test-ca", None);
        let leaf = cert("127.0.0.1", Some(&ca));
        let port = serve_body(&leaf, conns, body);
        let host = format!("127.0.0.1:{port}");
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join(&host)).unwrap();
        fs::write(
            root.path().join(&host).join("ca.crt"),
            ca.0.to_pem().unwrap(),
        )
        .unwrap();
        (ca, port, host, root)
    }

    fn get(tls: Tls, url: &str) -> io::Result<Vec<u8>> {
        let c = Client::new(tls);
        c.request("GET", &Url::parse(url).unwrap(), &[], Body::Empty)?
            .read_body(100)
    }

    #[test]
    fn trust_comes_from_the_registry_dir_and_failures_say_what_to_do() {
        let (ca, port, host, root) = trusted_server(4, "ok");
        let dirs = [root.path().to_path_buf()];

        let ok = Tls::for_registry(&host, &dirs, true).unwrap();
        assert_eq!(get(ok, &format!("https://{host}/v2/")).unwrap(), b"ok");

        let empty = tempfile::tempdir().unwrap();
        let none = Tls::for_registry(&host, &[empty.path().to_path_buf()], true).unwrap();
        let e = get(none, &format!("https://{host}/v2/")).unwrap_err();
        let e = e.downcast::<TlsError>().unwrap();
        assert!(matches!(e, TlsError::UnknownAuthority { .. }), "{e}");
        let want = format!("{}/{host}/ca.crt", empty.path().display());
        assert!(e.to_string().contains(&want), "{e}");

        // The CA is trusted for "localhost:PORT" too, but the certificate names 127.0.0.1.
        let lh = format!("localhost:{port}");
        fs::create_dir_all(root.path().join(&lh)).unwrap();
        fs::write(root.path().join(&lh).join("ca.crt"), ca.0.to_pem().unwrap()).unwrap();
        let t = Tls::for_registry(&lh, &dirs, true).unwrap();
        let e = get(t, &format!("https://{lh}/v2/")).unwrap_err();
        let e = e.downcast::<TlsError>().unwrap();
        assert!(matches!(e, TlsError::NameMismatch { .. }), "{e}");
        assert!(e.to_string().contains("is not valid for localhost"), "{e}");

        // Verification off (--insecure-registry): no CA needed.
        let off = Tls::for_registry(&host, &[], false).unwrap();
        assert_eq!(get(off, &format!("https://{host}/v2/")).unwrap(), b"ok");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("reg.example:5000");
        fs::create_dir_all(&d).unwrap();
        let ca = cert("kapsel-test-ca", None);
        fs::write(d.join("client.cert"), ca.0.to_pem().unwrap()).unwrap();
        let e =
            Tls::for_registry("reg.example:5000", &[root.path().to_path_buf()], true).unwrap_err();
        assert!(matches!(e, TlsError::MissingKey { .. }), "{e}");
        fs::write(
            d.join("client.key"),
            ca.1.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        Tls::for_registry("reg.example:5000", &[root.path().to_path_buf()], true).unwrap();
        fs::write(d.join("junk.crt"), b"not a certificate").unwrap();
        let e =
            Tls::for_registry("reg.example:5000", &[root.path().to_path_buf()], true).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    }

    #[test]
    fn loopback_registries_are_plain_http_until_they_answer_like_tls() {
        // A plain HTTP registry sees its request in plain HTTP and nothing else.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = l.local_addr().unwrap().port();
        let seen = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
            first
        });
        let get = |s: &Session| {
            let url = s.url("/v2/")?;
            let mut resp = s.request("GET", &url, &[], Source::Empty, &[])?;
            Ok::<_, Error>((resp.status, resp.read_body(10).unwrap(), resp.url.scheme))
        };
        let r = Reference::parse(&format!("127.0.0.1:{plain}/app:1")).unwrap();
        let s = Session::new(&r, &[], &[], None).unwrap();
        assert_eq!(get(&s).unwrap(), (200, b"ok".to_vec(), Scheme::Http));
        assert_eq!(seen.join().unwrap(), "GET /v2/ HTTP/1.1\r\n");

        // A TLS registry closes on the plain request: HTTPS, trusted through certs.d.
        let (_ca, port, _host, root) = trusted_server(8, "ok");
        let r = Reference::parse(&format!("127.0.0.1:{port}/app:1")).unwrap();
        let s = Session::new(&r, &[], &[root.path().to_path_buf()], None).unwrap();
        assert_eq!(get(&s).unwrap(), (200, b"ok".to_vec(), Scheme::Https));
        assert!(s.url("/v2/").unwrap().to_string().starts_with("https://"));

        // Without its CA: refused, no fallback.
        let s = Session::new(&r, &[], &[], None).unwrap();
        let e = get(&s).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Tls {
                    source: TlsError::UnknownAuthority { .. },
                    ..
                }
            ),
            "{e}"
        );
        // Listed as insecure: HTTPS without verification, from the start.
        let s = Session::new(&r, &[format!("127.0.0.1:{port}")], &[], None).unwrap();
        assert!(s.url("/v2/").unwrap().to_string().starts_with("https://"));
        assert_eq!(get(&s).unwrap(), (200, b"ok".to_vec(), Scheme::Https));
    }

    #[test]
    fn a_bearer_token_is_fetched_over_tls_with_the_registry_trust() {
        let (_ca, _port, host, root) = trusted_server(2, r#"{"token":"tls-token"}"#);
        let r = Reference::parse(&format!("{host}/app:1")).unwrap();
        let s = Session::new(&r, &[], &[root.path().to_path_buf()], None).unwrap();
        let t = s
            .fetch_token(
                &format!("https://{host}/token"),
                Some("reg"),
                &["repository:app:pull".to_string()],
            )
            .unwrap();
        assert_eq!(t, "tls-token");
    }
}
