//! ttrpc calls made by the calling thread on a connection it opens: one call per connection
//! ([`unary`]), or a few back to back on a [`Conn`] held for a burst (create then start).
//!
//! The `ttrpc` crate's sync client starts two threads per connection (a sender and a
//! receiver) and keeps them while the connection lives; kept open per shim, that made every
//! running container cost kapseld two threads (and the shim's server five). Task API calls are
//! rare (start, kill, exec, stats...), so kapseld connects for each and speaks the framing
//! itself: a 10-byte header (payload length, stream id, message type, flags, big-endian), then
//! a `ttrpc.Request`; the answer is a `ttrpc.Response` on the same stream id.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;

const HEADER_LEN: usize = 10;
const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;
/// The first stream of a connection (client stream ids are odd).
const STREAM: u32 = 1;
/// ttrpc peers refuse larger messages; so does kapseld when reading.
const MESSAGE_MAX: usize = 4 << 20;

fn socket_err(what: &str, e: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::Socket(format!("{what}: {e}"))
}

/// The socket path of a `unix://` address (a bare path is taken as is).
pub(super) fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// Calls `service/method` at `address` with `req` on a connection of its own; `timeout` bounds
/// the whole call (and is sent to the server as the request's deadline), None waits as long as
/// the server takes.
pub(super) fn unary<Req: Message, Resp: Message>(
    address: &str,
    service: &str,
    method: &str,
    req: &Req,
    timeout: Option<Duration>,
) -> ttrpc::Result<Resp> {
    Conn::open(address)?.call(service, method, req, timeout)
}

/// A connection for calls one after the other.
#[derive(Debug)]
pub(super) struct Conn {
    stream: UnixStream,
    next: u32,
}

impl Conn {
    pub(super) fn open(address: &str) -> ttrpc::Result<Conn> {
        let stream =
            UnixStream::connect(socket_path(address)).map_err(|e| socket_err("connect", e))?;
        Ok(Conn {
            stream,
            next: STREAM,
        })
    }

    /// One call (see [`unary`]). After an error the connection is not to be used again.
    pub(super) fn call<Req: Message, Resp: Message>(
        &mut self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> ttrpc::Result<Resp> {
        let mut r = ttrpc::Request::new();
        r.service = service.to_string();
        r.method = method.to_string();
        r.timeout_nano = timeout.map_or(0, |t| t.as_nanos() as i64);
        r.payload = req
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))?;
        let body = r
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))?;
        let conn = &mut self.stream;
        conn.set_read_timeout(timeout)
            .and_then(|()| conn.set_write_timeout(timeout))
            .map_err(|e| socket_err("set socket timeout", e))?;
        let id = self.next;
        self.next = self.next.wrapping_add(2);
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&[KIND_REQUEST, 0]);
        frame.extend_from_slice(&body);
        conn.write_all(&frame)
            .map_err(|e| socket_err("send request", e))?;

        loop {
            let mut header = [0u8; HEADER_LEN];
            conn.read_exact(&mut header)
                .map_err(|e| socket_err("read response", e))?;
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let stream = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if len > MESSAGE_MAX {
                return Err(socket_err(
                    "read response",
                    format!("a message of {len} bytes (at most {MESSAGE_MAX})"),
                ));
            }
            let mut buf = vec![0u8; len];
            conn.read_exact(&mut buf)
                .map_err(|e| socket_err("read response", e))?;
            if stream != id || header[8] != KIND_RESPONSE {
                continue;
            }
            let resp = ttrpc::Response::parse_from_bytes(&buf)
                .map_err(|e| ttrpc::Error::Others(format!("decode {method} response: {e}")))?;
            if let Some(status) = resp.status.as_ref() {
                if status.code() != ttrpc::Code::OK {
                    return Err(ttrpc::Error::RpcStatus(status.clone()));
                }
            }
            return Resp::parse_from_bytes(&resp.payload)
                .map_err(|e| ttrpc::Error::Others(format!("decode {method} response: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::api;

    /// A one-shot server: reads one request, answers with `status` (and an empty
    /// ConnectResponse carrying `shim_pid` 7 when OK).
    fn serve_once(path: &Path, code: ttrpc::Code) -> std::thread::JoinHandle<ttrpc::Request> {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut h = [0u8; HEADER_LEN];
            c.read_exact(&mut h).unwrap();
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let mut buf = vec![0u8; len];
            c.read_exact(&mut buf).unwrap();
            let req = ttrpc::Request::parse_from_bytes(&buf).unwrap();
            let mut resp = ttrpc::Response::new();
            resp.status = Some(ttrpc::get_status(code, "no such task")).into();
            let mut payload = api::ConnectResponse::new();
            payload.shim_pid = 7;
            resp.payload = payload.write_to_bytes().unwrap();
            let body = resp.write_to_bytes().unwrap();
            // Something on another stream first: skipped by the client.
            let mut out = Vec::new();
            for sid in [3u32, STREAM] {
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                out.extend_from_slice(&sid.to_be_bytes());
                out.extend_from_slice(&[KIND_RESPONSE, 0]);
                out.extend_from_slice(&body);
            }
            c.write_all(&out).unwrap();
            req
        })
    }

    #[test]
    fn a_call_sends_the_method_and_reads_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = serve_once(&path, ttrpc::Code::OK);
        let address = format!("unix://{}", path.display());
        let mut req = api::ConnectRequest::new();
        req.id = "c1".into();
        let r: api::ConnectResponse = unary(
            &address,
            "containerd.task.v2.Task",
            "Connect",
            &req,
            Some(Duration::from_secs(5)),
        )
        .unwrap();
        assert_eq!(r.shim_pid, 7);
        let sent = server.join().unwrap();
        assert_eq!(sent.service, "containerd.task.v2.Task");
        assert_eq!(sent.method, "Connect");
        assert_eq!(sent.timeout_nano, 5_000_000_000);
        assert_eq!(
            api::ConnectRequest::parse_from_bytes(&sent.payload)
                .unwrap()
                .id,
            "c1"
        );
    }

    #[test]
    fn a_held_connection_takes_calls_one_after_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut streams = Vec::new();
            for pid in [11u32, 12] {
                let mut h = [0u8; HEADER_LEN];
                c.read_exact(&mut h).unwrap();
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let sid = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                streams.push(sid);
                let mut buf = vec![0u8; len];
                c.read_exact(&mut buf).unwrap();
                let mut payload = api::StartResponse::new();
                payload.pid = pid;
                let mut resp = ttrpc::Response::new();
                resp.payload = payload.write_to_bytes().unwrap();
                let body = resp.write_to_bytes().unwrap();
                c.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
                c.write_all(&sid.to_be_bytes()).unwrap();
                c.write_all(&[KIND_RESPONSE, 0]).unwrap();
                c.write_all(&body).unwrap();
            }
            streams
        });
        let mut conn = Conn::open(&path.display().to_string()).unwrap();
        let mut pids = Vec::new();
        for _ in 0..2 {
            let r: api::StartResponse = conn
                .call(
                    "containerd.task.v2.Task",
                    "Start",
                    &api::StartRequest::new(),
                    Some(Duration::from_secs(5)),
                )
                .unwrap();
            pids.push(r.pid);
        }
        assert_eq!(pids, [11, 12]);
        assert_eq!(server.join().unwrap(), [1, 3]);
    }

    #[test]
    fn a_status_comes_back_as_an_rpc_error_and_a_dead_socket_as_a_socket_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = serve_once(&path, ttrpc::Code::NOT_FOUND);
        let address = format!("unix://{}", path.display());
        let r: ttrpc::Result<api::ConnectResponse> = unary(
            &address,
            "containerd.task.v2.Task",
            "Connect",
            &api::ConnectRequest::new(),
            Some(Duration::from_secs(5)),
        );
        match r {
            Err(ttrpc::Error::RpcStatus(s)) => {
                assert_eq!(s.code(), ttrpc::Code::NOT_FOUND);
                assert_eq!(s.message, "no such task");
            }
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
        let gone: ttrpc::Result<api::ConnectResponse> = unary(
            &format!("unix://{}", dir.path().join("none.sock").display()),
            "containerd.task.v2.Task",
            "Connect",
            &api::ConnectRequest::new(),
            None,
        );
        assert!(matches!(gone, Err(ttrpc::Error::Socket(_))), "{gone:?}");
    }
}
