//! The event ring: what changed in kapseld, for `Events.Subscribe` (a long poll).
//!
//! Events get a sequence number from 1 up. The ring keeps the last [`CAPACITY`] events; a
//! subscriber passes the last sequence it saw and gets what came after it, waiting up to a
//! deadline for the first one, and learns how many it missed when it fell behind the ring.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Events kept for slow subscribers.
pub const CAPACITY: usize = 4096;

pub const TOPIC_IMAGE_CREATE: &str = "/images/create";
pub const TOPIC_IMAGE_UPDATE: &str = "/images/update";
pub const TOPIC_IMAGE_DELETE: &str = "/images/delete";
pub const TOPIC_CONTENT_DELETE: &str = "/content/delete";
pub const TOPIC_SNAPSHOT_REMOVE: &str = "/snapshots/remove";

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub seq: u64,
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
    pub namespace: String,
    pub topic: String,
    pub event: serde_json::Value,
}

/// What a subscriber gets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub events: Vec<Envelope>,
    /// The sequence to pass next time.
    pub last_seq: u64,
    /// Events that left the ring before this subscriber asked.
    pub missed: u64,
}

#[derive(Debug, Default)]
struct Ring {
    last_seq: u64,
    events: VecDeque<Envelope>,
}

#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<Ring>,
    changed: Condvar,
}

impl Events {
    pub fn new() -> Events {
        Events::default()
    }

    pub fn publish(&self, namespace: &str, topic: &str, event: serde_json::Value) {
        let mut r = self.ring.lock().expect("event ring lock");
        r.last_seq += 1;
        let env = Envelope {
            seq: r.last_seq,
            timestamp: crate::metadata::now_nanos(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event,
        };
        tracing::debug!(topic, namespace, seq = env.seq, "event");
        if r.events.len() == CAPACITY {
            r.events.pop_front();
        }
        r.events.push_back(env);
        drop(r);
        self.changed.notify_all();
    }

    /// Events after `after_seq` whose topic starts with one of `topics` (all when empty);
    /// waits up to `wait` for the first one.
    pub fn subscribe(&self, mut after_seq: u64, wait: Duration, topics: &[String]) -> Batch {
        let deadline = Instant::now() + wait;
        let mut missed = 0;
        let mut r = self.ring.lock().expect("event ring lock");
        loop {
            if r.last_seq > after_seq {
                let oldest = r.events.front().map_or(r.last_seq + 1, |e| e.seq);
                missed += oldest.saturating_sub(after_seq + 1);
                let events: Vec<Envelope> = r
                    .events
                    .iter()
                    .filter(|e| e.seq > after_seq)
                    .filter(|e| topics.is_empty() || topics.iter().any(|t| e.topic.starts_with(t)))
                    .cloned()
                    .collect();
                after_seq = r.last_seq;
                if !events.is_empty() || missed > 0 {
                    return Batch {
                        events,
                        last_seq: after_seq,
                        missed,
                    };
                }
                // Only filtered-out events came: keep waiting past them.
            }
            let now = Instant::now();
            if now >= deadline {
                return Batch {
                    events: Vec::new(),
                    last_seq: after_seq.max(r.last_seq),
                    missed,
                };
            }
            r = self
                .changed
                .wait_timeout(r, deadline - now)
                .expect("event ring lock")
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn subscribers_get_what_came_after_their_sequence() {
        let ev = Events::new();
        ev.publish(
            "default",
            TOPIC_IMAGE_CREATE,
            serde_json::json!({"name": "a"}),
        );
        ev.publish(
            "default",
            TOPIC_IMAGE_DELETE,
            serde_json::json!({"name": "a"}),
        );
        let b = ev.subscribe(0, Duration::ZERO, &[]);
        assert_eq!(b.events.len(), 2);
        assert_eq!((b.last_seq, b.missed), (2, 0));
        assert_eq!(b.events[1].topic, TOPIC_IMAGE_DELETE);
        let b = ev.subscribe(1, Duration::ZERO, &["/images/delete".into()]);
        assert_eq!(b.events.len(), 1);
        let b = ev.subscribe(2, Duration::from_millis(10), &[]);
        assert!(b.events.is_empty());
        assert_eq!(b.last_seq, 2);
    }

    #[test]
    fn long_poll_wakes_on_publish_and_skips_filtered_topics() {
        let ev = Arc::new(Events::new());
        let ev2 = ev.clone();
        let t = std::thread::spawn(move || {
            ev2.subscribe(0, Duration::from_secs(10), &["/images/".into()])
        });
        std::thread::sleep(Duration::from_millis(50));
        ev.publish("default", TOPIC_CONTENT_DELETE, serde_json::json!({}));
        std::thread::sleep(Duration::from_millis(50));
        ev.publish(
            "default",
            TOPIC_IMAGE_CREATE,
            serde_json::json!({"name": "b"}),
        );
        let b = t.join().unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.events[0].seq, 2);
        assert_eq!(b.last_seq, 2);
    }

    #[test]
    fn slow_subscriber_learns_what_it_missed() {
        let ev = Events::new();
        for _ in 0..CAPACITY + 10 {
            ev.publish("default", TOPIC_IMAGE_CREATE, serde_json::json!({}));
        }
        let b = ev.subscribe(0, Duration::ZERO, &[]);
        assert_eq!(b.missed, 10);
        assert_eq!(b.events.len(), CAPACITY);
        assert_eq!(b.events[0].seq, 11);
    }
}
