//! A small blocking HTTP/1.1 client: what the distribution API needs and nothing more.
//!
//! Plain HTTP and HTTPS (through libssl, trusted as [`super::tls::Tls`] says);
//! `Content-Length`, chunked and read-to-close bodies; keep-alive connections pooled per host;
//! redirects followed for GET and HEAD (registries redirect blob downloads to storage), with the
//! `Authorization` header dropped when the redirect leaves the host.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::tls::{Tls, TlsStream};

const MAX_REDIRECTS: usize = 8;
const MAX_HEADER_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// A server that takes the TLS hello for the start of something else may wait for more.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An absolute URL, split the way a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// Host as written in the URL (`[::1]` keeps its brackets).
    pub host: String,
    pub port: u16,
    /// `/v2/...?...`, never empty.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> io::Result<Url> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("invalid URL {s:?}"));
        let (scheme, rest) = if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let default_port = if scheme == Scheme::Http { 80 } else { 443 };
        let (host, port) = if authority.starts_with('[') {
            let end = authority.find(']').ok_or_else(bad)?;
            let host = &authority[..=end];
            match authority[end + 1..].strip_prefix(':') {
                Some(p) => (host, p.parse().map_err(|_| bad())?),
                None if authority.len() == end + 1 => (host, default_port),
                None => return Err(bad()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() || host.contains('@') {
            return Err(bad());
        }
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host:port` (what a connection is keyed by and the `Host` header says).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Resolves a `Location` header against this URL.
    pub fn join(&self, location: &str) -> io::Result<Url> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if location.starts_with("//") {
            let scheme = if self.scheme == Scheme::Http {
                "http:"
            } else {
                "https:"
            };
            Url::parse(&format!("{scheme}{location}"))
        } else if location.starts_with('/') {
            Ok(Url {
                path: location.to_string(),
                ..self.clone()
            })
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
            Ok(Url {
                path: format!("{dir}{location}"),
                ..self.clone()
            })
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.scheme == Scheme::Http {
            "http"
        } else {
            "https"
        };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

/// A request body. `Bytes` and `Empty` can be sent again (after a stale pooled connection or a
/// redirect); a `Reader` is sent once on a fresh connection.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(Box<dyn Read + 'a>, u64),
}

/// A connection: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

type Conn = BufReader<Stream>;

/// Connections kept alive, by `scheme://host:port`.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

impl Pool {
    fn take(&self, key: &str) -> Option<Conn> {
        self.idle.lock().ok()?.get_mut(key)?.pop()
    }
    fn put(&self, key: String, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            let v = idle.entry(key).or_default();
            if v.len() < 8 {
                v.push(conn);
            }
        }
    }
}

/// A client for one registry: its connections and how TLS is trusted for it.
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
    tls: Arc<Tls>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http::Client")
    }
}

pub struct Response {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The URL that answered (after redirects).
    pub url: Url,
    body: BodyReader,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} from {}", self.status, self.url)
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole body, refusing more than `limit` bytes.
    pub fn read_body(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)?;
        if out.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response body from {} larger than {limit} bytes", self.url),
            ));
        }
        Ok(out)
    }

    /// Reads and drops the rest of the body so the connection can be reused (small bodies only).
    pub fn discard(mut self) {
        let _ = io::copy(&mut (&mut self.body).take(1 << 20), &mut io::sink());
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

enum Framing {
    Length(u64),
    /// Bytes left in the current chunk; `None` before the first size line.
    Chunked(Option<u64>),
    Close,
    Done,
}

struct BodyReader {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
    key: String,
}

impl BodyReader {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(c) = self.conn.take() {
            if self.keep_alive {
                self.pool.put(std::mem::take(&mut self.key), c);
            }
        }
    }
}

fn read_line(conn: &mut Conn, limit: usize) -> io::Result<String> {
    let mut line = Vec::new();
    let n = conn
        .by_ref()
        .take(limit as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "HTTP line too long",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 HTTP header"))
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(0);
            };
            match self.framing {
                Framing::Done => return Ok(0),
                Framing::Length(0) => {
                    self.finish();
                    return Ok(0);
                }
                Framing::Length(left) => {
                    let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                    let n = conn.read(&mut buf[..want])?;
                    if n == 0 {
                        self.conn = None;
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("connection closed with {left} bytes of the body missing"),
                        ));
                    }
                    self.framing = Framing::Length(left - n as u64);
                    if left == n as u64 {
                        self.finish();
                    }
                    return Ok(n);
                }
                Framing::Close => {
                    let n = conn.read(buf)?;
                    if n == 0 {
                        self.conn = None;
                        self.framing = Framing::Done;
                    }
                    return Ok(n);
                }
                Framing::Chunked(None) | Framing::Chunked(Some(0)) => {
                    if matches!(self.framing, Framing::Chunked(Some(0))) {
                        // End of a chunk's data: its CRLF.
                        let l = read_line(conn, 16)?;
                        if !l.is_empty() {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "bad chunk end",
                            ));
                        }
                    }
                    let line = read_line(conn, 1024)?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad chunk size {line:?}"),
                        )
                    })?;
                    if size == 0 {
                        // Trailers until an empty line.
                        loop {
                            if read_line(conn, 8192)?.is_empty() {
                                break;
                            }
                        }
                        self.finish();
                        return Ok(0);
                    }
                    self.framing = Framing::Chunked(Some(size));
                }
                Framing::Chunked(Some(left)) => {
                    let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                    let n = conn.read(&mut buf[..want])?;
                    if n == 0 {
                        self.conn = None;
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed in the middle of a chunk",
                        ));
                    }
                    self.framing = Framing::Chunked(Some(left - n as u64));
                    return Ok(n);
                }
            }
        }
    }
}

/// The pool key of `url`'s connections.
fn pool_key(url: &Url) -> String {
    format!("{:?}://{}", url.scheme, url.authority())
}

impl Client {
    pub fn new(tls: Tls) -> Client {
        Client {
            pool: Arc::default(),
            tls: Arc::new(tls),
        }
    }

    /// Opens a connection to `url`'s host, with the TLS handshake for https. A failed
    /// handshake is an [`io::Error`] wrapping a [`super::tls::TlsError`].
    fn connect(&self, url: &Url) -> io::Result<Conn> {
        let host = url.host.trim_start_matches('[').trim_end_matches(']');
        let mut last = None;
        for addr in (host, url.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    s.set_write_timeout(Some(IO_TIMEOUT))?;
                    s.set_nodelay(true)?;
                    let stream = match url.scheme {
                        Scheme::Http => Stream::Plain(s),
                        Scheme::Https => {
                            s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
                            let t = self
                                .tls
                                .connect(host, url.port, s)
                                .map_err(io::Error::other)?;
                            t.tcp().set_read_timeout(Some(IO_TIMEOUT))?;
                            Stream::Tls(Box::new(t))
                        }
                    };
                    return Ok(BufReader::with_capacity(64 * 1024, stream));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{}: no address", url.host))
        }))
    }

    /// Connects to `url`'s host (the TLS handshake included) and keeps the connection for the
    /// next request: tells whether the host answers on that scheme at all.
    pub fn probe(&self, url: &Url) -> io::Result<()> {
        let conn = self.connect(url)?;
        self.pool.put(pool_key(url), conn);
        Ok(())
    }

    /// Sends one request; follows redirects for GET and HEAD.
    pub fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        mut body: Body<'_>,
    ) -> io::Result<Response> {
        let mut url = url.clone();
        let origin = url.authority();
        for _ in 0..=MAX_REDIRECTS {
            let same_host = url.authority() == origin;
            let hs: Vec<(&str, String)> = headers
                .iter()
                .filter(|(k, _)| same_host || !k.eq_ignore_ascii_case("authorization"))
                .cloned()
                .collect();
            let resp = self.send_once(method, &url, &hs, &mut body)?;
            let follow = matches!(resp.status, 301 | 302 | 303 | 307 | 308)
                && (method == "GET" || method == "HEAD");
            if !follow {
                return Ok(resp);
            }
            let Some(loc) = resp.header("location").map(str::to_string) else {
                return Ok(resp);
            };
            resp.discard();
            url = url.join(&loc)?;
        }
        Err(io::Error::other(format!("too many redirects from {url}")))
    }

    fn send_once(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: &mut Body<'_>,
    ) -> io::Result<Response> {
        let key = pool_key(url);
        let resendable = !matches!(body, Body::Reader(..));
        // A pooled connection may have been closed by the server meanwhile: one retry on a
        // fresh connection when the body can be sent again.
        if resendable {
            if let Some(conn) = self.pool.take(&key) {
                if let Ok(r) = self.exchange(conn, method, url, headers, body) {
                    return Ok(r);
                }
            }
        }
        self.exchange(self.connect(url)?, method, url, headers, body)
    }

    fn exchange(
        &self,
        mut conn: Conn,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: &mut Body<'_>,
    ) -> io::Result<Response> {
        let host_header = if (url.scheme == Scheme::Http && url.port == 80)
            || (url.scheme == Scheme::Https && url.port == 443)
        {
            url.host.clone()
        } else {
            url.authority()
        };
        let mut head = format!("{method} {} HTTP/1.1\r\nHost: {host_header}\r\n", url.path);
        head.push_str("User-Agent: kapsel/0.1\r\n");
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        let len = match body {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Reader(_, n) => *n,
        };
        if len > 0 || !matches!(method, "GET" | "HEAD" | "DELETE") {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        head.push_str("\r\n");
        {
            let mut w = io::BufWriter::with_capacity(64 * 1024, conn.get_mut());
            w.write_all(head.as_bytes())?;
            match body {
                Body::Empty => {}
                Body::Bytes(b) => w.write_all(b)?,
                Body::Reader(r, n) => {
                    let copied = io::copy(&mut r.take(*n), &mut w)?;
                    if copied != *n {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("request body ended after {copied} of {n} bytes"),
                        ));
                    }
                }
            }
            w.flush()?;
        }

        // Status line and headers (skipping 1xx interim responses).
        let (status, version, headers) = loop {
            let status_line = read_line(&mut conn, 8192)?;
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or("").to_string();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|_| version.starts_with("HTTP/1."))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{url}: not an HTTP/1.x response: {status_line:?}"),
                    )
                })?;
            let mut headers = Vec::new();
            let mut total = 0;
            loop {
                let line = read_line(&mut conn, 8192)?;
                total += line.len();
                if total > MAX_HEADER_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "HTTP headers too large",
                    ));
                }
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            if (100..200).contains(&status) {
                continue;
            }
            break (status, version, headers);
        };
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        let conn_hdr = get("connection").unwrap_or("").to_ascii_lowercase();
        let keep_alive = if version == "HTTP/1.0" {
            conn_hdr.contains("keep-alive")
        } else {
            !conn_hdr.contains("close")
        };
        let framing = if method == "HEAD" || status == 204 || status == 304 {
            Framing::Length(0)
        } else if get("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked(None)
        } else if let Some(l) = get("content-length") {
            Framing::Length(l.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad Content-Length {l:?}"),
                )
            })?)
        } else {
            Framing::Close
        };
        let keep_alive = keep_alive && !matches!(framing, Framing::Close);
        let mut body = BodyReader {
            conn: Some(conn),
            framing,
            keep_alive,
            pool: self.pool.clone(),
            key: pool_key(url),
        };
        if matches!(body.framing, Framing::Length(0)) {
            body.finish();
        }
        Ok(Response {
            status,
            headers,
            url: url.clone(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn client() -> Client {
        Client::new(Tls::for_registry("127.0.0.1", &[], true).unwrap())
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:5000/v2/app/blobs/uploads/?a=b").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 5000);
        assert_eq!(u.path, "/v2/app/blobs/uploads/?a=b");
        let u2 = u.join("/v2/x?y").unwrap();
        assert_eq!(u2.to_string(), "http://127.0.0.1:5000/v2/x?y");
        let u3 = u.join("http://other:1/p").unwrap();
        assert_eq!(u3.authority(), "other:1");
        let u4 = Url::parse("http://[::1]:5000").unwrap();
        assert_eq!(
            (u4.host.as_str(), u4.port, u4.path.as_str()),
            ("[::1]", 5000, "/")
        );
        assert_eq!(Url::parse("https://h/x").unwrap().port, 443);
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse("http://u@h/").is_err());
    }

    /// A one-shot server that answers each accepted connection's requests with `replies` in
    /// turn and records what it read.
    fn serve(replies: Vec<&'static str>) -> (u16, std::thread::JoinHandle<(usize, Vec<String>)>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut accepted = 0;
            let mut seen = Vec::new();
            let mut replies = replies.into_iter().peekable();
            'outer: while let Ok((s, _)) = l.accept() {
                accepted += 1;
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut req = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            continue 'outer;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        req.push_str(&line);
                    }
                    seen.push(req);
                    let Some(reply) = replies.next() else {
                        break 'outer;
                    };
                    (&s).write_all(reply.as_bytes()).unwrap();
                    if replies.peek().is_none() {
                        break 'outer;
                    }
                    if reply.contains("Connection: close") {
                        continue 'outer;
                    }
                }
            }
            (accepted, seen)
        });
        (port, h)
    }

    #[test]
    fn bodies_keep_alive_and_redirects() {
        let (port, h) = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: /moved\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ]);
        let c = client();
        let base = Url::parse(&format!("http://127.0.0.1:{port}/a")).unwrap();
        let mut r = c.request("GET", &base, &[], Body::Empty).unwrap();
        assert_eq!(r.read_body(100).unwrap(), b"hello");
        let mut r = c.request("GET", &base, &[], Body::Empty).unwrap();
        assert_eq!(r.read_body(100).unwrap(), b"abcde");
        let mut r = c
            .request(
                "GET",
                &base,
                &[("Authorization", "Bearer t".into())],
                Body::Empty,
            )
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.url.path, "/moved");
        assert_eq!(r.read_body(100).unwrap(), b"ok");
        let (accepted, seen) = h.join().unwrap();
        assert_eq!(
            accepted, 1,
            "one kept-alive connection for all four requests"
        );
        assert!(seen[3].starts_with("GET /moved HTTP/1.1"));
        assert!(
            seen[3].contains("Authorization: Bearer t"),
            "same host keeps the header"
        );
    }

    #[test]
    fn a_redirect_to_another_host_drops_the_credentials() {
        let (storage, h2) = serve(vec!["HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nblob"]);
        let redirect: &'static str = Box::leak(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{storage}/s3/blob?sig=1\r\nContent-Length: 0\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (reg, h1) = serve(vec![redirect]);
        let c = client();
        let u = Url::parse(&format!("http://127.0.0.1:{reg}/v2/a/blobs/x")).unwrap();
        let mut r = c
            .request(
                "GET",
                &u,
                &[("Authorization", "Bearer secret".into())],
                Body::Empty,
            )
            .unwrap();
        assert_eq!(r.read_body(10).unwrap(), b"blob");
        assert_eq!(r.url.authority(), format!("localhost:{storage}"));
        let (_, seen1) = h1.join().unwrap();
        let (_, seen2) = h2.join().unwrap();
        assert!(seen1[0].contains("Authorization: Bearer secret"));
        assert!(seen2[0].starts_with("GET /s3/blob?sig=1 HTTP/1.1"));
        assert!(!seen2[0].contains("Authorization"), "{}", seen2[0]);
    }

    #[test]
    fn truncated_body_is_an_error() {
        let (port, _h) = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc",
        ]);
        let c = client();
        let u = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let mut r = c.request("GET", &u, &[], Body::Empty).unwrap();
        let e = r.read_body(100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}
