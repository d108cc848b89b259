//! Task events go to containerd in order, from one publishing thread, so TaskExit never
//! overtakes TaskStart. Two ways, as containerd offers them:
//! - its ttrpc events service at `TTRPC_ADDRESS` (`containerd.services.events.ttrpc.v1.Events/
//!   Forward`), called by hand on one connection: no process per event, no extra thread
//!   (ttrpc's sync client starts two per connection). The connection is closed once the queue
//!   stays empty for [`IDLE_CLOSE`]: a sync ttrpc server (kapseld) keeps several threads per
//!   open connection, which an idle task should not cost it;
//! - else its publish binary: `containerd --address ADDRESS publish --topic T --namespace NS`,
//!   the event as a protobuf `Any` on stdin.
//!
//! A failed delivery is retried with backoff (containerd may be restarting), then dropped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc;

use crate::reaper::Reaper;

/// Where events go.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    pub binary: PathBuf,
    /// containerd's gRPC address (what `publish` dials).
    pub address: String,
    /// containerd's ttrpc address (`TTRPC_ADDRESS`), preferred when given.
    pub ttrpc_address: Option<String>,
    pub namespace: String,
}

/// Attempts per event, and the first pause between them (doubled each time).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long one Forward call may take.
const CALL_LIMIT: Duration = Duration::from_secs(5);
/// How long the connection to the events service stays open with nothing to send (a task's
/// create, start, exit and delete usually come in bursts).
const IDLE_CLOSE: Duration = Duration::from_millis(500);
const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
/// ttrpc framing: a 10-byte header (length, stream id, type, flags), big-endian.
const HEADER_LEN: usize = 10;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
/// containerd refuses larger messages; so do we when reading.
const MESSAGE_MAX: usize = 4 << 20;

/// One kept connection to containerd's ttrpc events service.
struct Forwarder {
    socket: PathBuf,
    conn: Option<UnixStream>,
    /// Client stream ids are odd and increase.
    next_stream: u32,
}

impl Forwarder {
    fn new(address: &str) -> Forwarder {
        Forwarder {
            socket: PathBuf::from(address.strip_prefix("unix://").unwrap_or(address)),
            conn: None,
            next_stream: 1,
        }
    }

    /// One Forward call; the connection is dropped on any failure (made anew next time).
    fn forward(&mut self, namespace: &str, topic: &str, event: &Any) -> std::io::Result<()> {
        let mut envelope = Envelope::new();
        envelope.timestamp = Some(Timestamp::now()).into();
        envelope.namespace = namespace.to_string();
        envelope.topic = topic.to_string();
        envelope.event = Some(event.clone()).into();
        let mut fr = ForwardRequest::new();
        fr.envelope = Some(envelope).into();
        let mut req = ttrpc::Request::new();
        req.service = EVENTS_SERVICE.to_string();
        req.method = "Forward".to_string();
        req.payload = fr.write_to_bytes().map_err(std::io::Error::other)?;
        req.timeout_nano = CALL_LIMIT.as_nanos() as i64;
        let body = req.write_to_bytes().map_err(std::io::Error::other)?;
        let result = self.call(&body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn call(&mut self, body: &[u8]) -> std::io::Result<()> {
        if self.conn.is_none() {
            let c = UnixStream::connect(&self.socket)?;
            c.set_read_timeout(Some(CALL_LIMIT))?;
            c.set_write_timeout(Some(CALL_LIMIT))?;
            self.conn = Some(c);
        }
        let conn = self.conn.as_mut().ok_or(std::io::ErrorKind::NotConnected)?;
        let stream = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        conn.write_all(&frame_header(body.len(), stream, TYPE_REQUEST))?;
        conn.write_all(body)?;
        loop {
            let mut h = [0u8; HEADER_LEN];
            conn.read_exact(&mut h)?;
            let (len, sid, kind) = parse_header(&h);
            if len > MESSAGE_MAX {
                return Err(std::io::Error::other(format!(
                    "ttrpc message of {len} bytes from containerd"
                )));
            }
            let mut buf = vec![0u8; len];
            conn.read_exact(&mut buf)?;
            if sid != stream || kind != TYPE_RESPONSE {
                continue;
            }
            let resp = ttrpc::Response::parse_from_bytes(&buf).map_err(std::io::Error::other)?;
            let status = resp.status.as_ref();
            return match status {
                Some(st) if st.code() != ttrpc::Code::OK => Err(std::io::Error::other(format!(
                    "containerd refused the event: {:?}: {}",
                    st.code(),
                    st.message
                ))),
                _ => Ok(()),
            };
        }
    }
}

fn frame_header(len: usize, stream: u32, kind: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&(len as u32).to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8] = kind;
    h
}

fn parse_header(h: &[u8; HEADER_LEN]) -> (usize, u32, u8) {
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let sid = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    (len, sid, h[8])
}

enum Item {
    Event(String, Any),
    /// Acknowledged once everything queued before it is published.
    Flush(mpsc::Sender<()>),
}

/// Queue of events to publish.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: Option<mpsc::Sender<Item>>,
}

/// Wrap a containerd event the way containerd's typeurl names it (`containerd.events.TaskExit`).
/// The name is built by hand: protobuf reflection would build every descriptor of the task API
/// in memory (hundreds of KiB an idle shim should not carry).
pub fn to_any<M: Message>(event: &M) -> Any {
    let mut any = Any::new();
    any.type_url = format!("containerd.events.{}", M::NAME);
    any.value = event.write_to_bytes().unwrap_or_default();
    any
}

impl Publisher {
    /// A publisher that drops everything (no `-publish-binary` given).
    pub fn disabled() -> Publisher {
        Publisher { tx: None }
    }

    /// Start the publishing thread.
    pub fn start(target: PublishTarget, reaper: Reaper) -> std::io::Result<Publisher> {
        let (tx, rx) = mpsc::channel::<Item>();
        std::thread::Builder::new()
            .name("publisher".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut forwarder = target.ttrpc_address.as_deref().map(Forwarder::new);
                loop {
                    let item = match rx.recv_timeout(IDLE_CLOSE) {
                        Ok(item) => item,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Some(f) = forwarder.as_mut() {
                                f.conn = None;
                            }
                            match rx.recv() {
                                Ok(item) => item,
                                Err(_) => break,
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    match item {
                        Item::Event(topic, any) => {
                            let mut pause = FIRST_BACKOFF;
                            for attempt in 1..=ATTEMPTS {
                                let sent = match forwarder.as_mut() {
                                    Some(f) => f.forward(&target.namespace, &topic, &any),
                                    None => publish_once(&target, &reaper, &topic, &any),
                                };
                                if let (Err(e), ATTEMPTS) = (&sent, attempt) {
                                    // containerd never learns of it: say so in the shim's log.
                                    eprintln!(
                                        "containerd-shim-kapsel-v2: dropping event {topic} \
                                         after {ATTEMPTS} attempts: {e}"
                                    );
                                }
                                if sent.is_ok() || attempt == ATTEMPTS {
                                    break;
                                }
                                std::thread::sleep(pause);
                                pause *= 2;
                            }
                        }
                        Item::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            })?;
        Ok(Publisher { tx: Some(tx) })
    }

    /// Queue `event` under `topic` (e.g. `/tasks/exit`).
    pub fn publish<M: Message>(&self, topic: &str, event: &M) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Item::Event(topic.to_string(), to_any(event)));
        }
    }

    /// Wait (at most `limit`) until every event queued so far is published: the shim must not
    /// exit with TaskExit/TaskDelete still in the queue.
    pub fn flush(&self, limit: std::time::Duration) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::channel();
            if tx.send(Item::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(limit);
            }
        }
    }
}

fn publish_once(
    target: &PublishTarget,
    reaper: &Reaper,
    topic: &str,
    any: &Any,
) -> std::io::Result<()> {
    let data = any.write_to_bytes().map_err(std::io::Error::other)?;
    let mut cmd = Command::new(&target.binary);
    crate::reaper::unblock_signals_in_child(&mut cmd);
    let mut child = cmd
        .arg("--address")
        .arg(&target.address)
        .arg("publish")
        .arg("--topic")
        .arg(topic)
        .arg("--namespace")
        .arg(&target.namespace)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&data);
    }
    let status = reaper.wait(child.id() as i32);
    if status != 0 {
        return Err(std::io::Error::other(format!(
            "publish {topic}: exit {status}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::events::task::TaskExit;

    /// A stand-in for containerd's ttrpc events service: reads one request, checks it, answers
    /// with the given status code.
    fn fake_events_service(code: ttrpc::Code) -> (tempfile::TempDir, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttrpc.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut h = [0u8; HEADER_LEN];
            c.read_exact(&mut h).unwrap();
            let (len, sid, kind) = parse_header(&h);
            assert_eq!((sid, kind), (1, TYPE_REQUEST));
            let mut buf = vec![0u8; len];
            c.read_exact(&mut buf).unwrap();
            let req = ttrpc::Request::parse_from_bytes(&buf).unwrap();
            assert_eq!(req.service, EVENTS_SERVICE);
            assert_eq!(req.method, "Forward");
            let fr = ForwardRequest::parse_from_bytes(&req.payload).unwrap();
            assert_eq!(fr.envelope.topic, "/tasks/oom");
            assert_eq!(fr.envelope.namespace, "ns1");
            assert_eq!(fr.envelope.event.type_url, "containerd.events.TaskExit");
            // Noise on another stream first: the client must wait for its own answer.
            let other = ttrpc::Response::new().write_to_bytes().unwrap();
            c.write_all(&frame_header(other.len(), 7, TYPE_RESPONSE))
                .unwrap();
            c.write_all(&other).unwrap();
            let mut resp = ttrpc::Response::new();
            resp.status = Some(ttrpc::get_status(code, "nope")).into();
            let body = resp.write_to_bytes().unwrap();
            c.write_all(&frame_header(body.len(), sid, TYPE_RESPONSE))
                .unwrap();
            c.write_all(&body).unwrap();
        });
        (dir, t)
    }

    #[test]
    fn forward_speaks_ttrpc_and_reports_refusals() {
        let event = to_any(&TaskExit::new());
        for (code, ok) in [
            (ttrpc::Code::OK, true),
            (ttrpc::Code::INVALID_ARGUMENT, false),
        ] {
            let (dir, t) = fake_events_service(code);
            let address = format!("unix://{}", dir.path().join("ttrpc.sock").display());
            let mut f = Forwarder::new(&address);
            let r = f.forward("ns1", "/tasks/oom", &event);
            t.join().unwrap();
            assert_eq!(r.is_ok(), ok, "{r:?}");
        }
        let mut gone = Forwarder::new("/nonexistent/kapsel-ttrpc.sock");
        assert!(gone.forward("ns1", "/tasks/oom", &event).is_err());
    }

    #[test]
    fn the_events_connection_is_closed_once_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttrpc.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let publisher = Publisher::start(
            PublishTarget {
                binary: PathBuf::from("/nonexistent/publish"),
                address: String::new(),
                ttrpc_address: Some(format!("unix://{}", path.display())),
                namespace: "ns1".into(),
            },
            Reaper::polling_watched(),
        )
        .unwrap();
        publisher.publish("/tasks/oom", &TaskExit::new());
        let (mut c, _) = listener.accept().unwrap();
        let mut h = [0u8; HEADER_LEN];
        c.read_exact(&mut h).unwrap();
        let (len, sid, _) = parse_header(&h);
        let mut buf = vec![0u8; len];
        c.read_exact(&mut buf).unwrap();
        let body = ttrpc::Response::new().write_to_bytes().unwrap();
        c.write_all(&frame_header(body.len(), sid, TYPE_RESPONSE))
            .unwrap();
        c.write_all(&body).unwrap();
        let answered = std::time::Instant::now();
        // Nothing more to send: the shim hangs up after IDLE_CLOSE.
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        let idle = answered.elapsed();
        assert!(rest.is_empty());
        assert!(
            idle >= IDLE_CLOSE - Duration::from_millis(50) && idle < Duration::from_secs(3),
            "closed after {idle:?}"
        );
        // The next event opens a new connection.
        publisher.publish("/tasks/oom", &TaskExit::new());
        let (mut c2, _) = listener.accept().unwrap();
        c2.read_exact(&mut h).unwrap();
    }

    #[test]
    fn any_carries_containerd_type_name() {
        let mut e = TaskExit::new();
        e.container_id = "c1".into();
        e.exit_status = 3;
        let any = to_any(&e);
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let back = TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.exit_status, 3);
    }
}
