//! Long operations (pull, push, import, export) run on their own thread as jobs; clients poll
//! their progress with a long poll (`Transfer.Progress`): ttrpc's synchronous server has no
//! streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Finished jobs are kept this long for a client to read their outcome.
const KEEP_DONE: Duration = Duration::from_secs(600);

/// One item a job moves (a blob, a layer being extracted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub offset: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub version: u64,
    pub done: bool,
    /// (status code, message) of a failure.
    pub error: Option<(i32, String)>,
    pub items: Vec<Item>,
    pub messages: Vec<String>,
    pub results: Vec<String>,
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    state: Mutex<State>,
    changed: Condvar,
    cancel: AtomicBool,
    finished_at: Mutex<Option<Instant>>,
}

impl Job {
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().expect("job lock");
        f(&mut s);
        s.version += 1;
        drop(s);
        self.changed.notify_all();
    }

    /// Adds or updates the item `id`.
    pub fn item(&self, id: &str, kind: &str, status: &str, offset: u64, total: u64) {
        self.update(|s| {
            if let Some(it) = s.items.iter_mut().find(|i| i.id == id) {
                it.status = status.to_string();
                it.offset = offset;
                it.total = total;
                if !kind.is_empty() {
                    it.kind = kind.to_string();
                }
            } else {
                s.items.push(Item {
                    id: id.to_string(),
                    kind: kind.to_string(),
                    status: status.to_string(),
                    offset,
                    total,
                });
            }
        });
    }

    pub fn message(&self, m: impl Into<String>) {
        let m = m.into();
        self.update(|s| s.messages.push(m));
    }

    pub fn result(&self, r: impl Into<String>) {
        let r = r.into();
        self.update(|s| s.results.push(r));
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.update(|_| {});
    }

    fn finish(&self, outcome: Result<(), (i32, String)>) {
        *self.finished_at.lock().expect("job lock") = Some(Instant::now());
        self.update(|s| {
            s.done = true;
            s.error = outcome.err();
        });
    }

    /// The state once its version is above `after` (or it is done, or `wait` passed).
    pub fn wait(&self, after: u64, wait: Duration) -> State {
        let deadline = Instant::now() + wait;
        let mut s = self.state.lock().expect("job lock");
        while s.version <= after && !s.done {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .expect("job lock")
                .0;
        }
        s.clone()
    }
}

#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl Jobs {
    /// Starts `work` on a new thread as the job `<kind>-<n>`.
    pub fn start(
        &self,
        kind: &str,
        work: impl FnOnce(&Job) -> Result<(), super::Error> + Send + 'static,
    ) -> Arc<Job> {
        let id = format!("{kind}-{}", self.next.fetch_add(1, Ordering::SeqCst) + 1);
        let job = Arc::new(Job {
            id: id.clone(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            cancel: AtomicBool::new(false),
            finished_at: Mutex::new(None),
        });
        {
            let mut m = self.jobs.lock().expect("jobs lock");
            m.retain(|_, j| {
                j.finished_at
                    .lock()
                    .expect("job lock")
                    .is_none_or(|t| t.elapsed() < KEEP_DONE)
            });
            m.insert(id.clone(), job.clone());
        }
        let j = job.clone();
        let spawned = std::thread::Builder::new().name(id.clone()).spawn(move || {
            let outcome = work(&j).map_err(|e| {
                tracing::warn!(job = j.id.as_str(), "{e}");
                (e.code(), e.to_string())
            });
            j.finish(outcome);
        });
        if let Err(e) = spawned {
            job.finish(Err((
                super::code::UNAVAILABLE,
                format!("cannot start a thread for {id}: {e}"),
            )));
        }
        job
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().expect("jobs lock").get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_long_polls_until_a_change_and_reports_the_outcome() {
        let jobs = Jobs::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let job = jobs.start("pull", move |j| {
            j.item("sha256:aa", "layer", "downloading", 10, 100);
            rx.recv().unwrap();
            j.item("sha256:aa", "", "done", 100, 100);
            Err(super::super::Error::NotFound("x:1".into()))
        });
        let s = job.wait(0, Duration::from_secs(10));
        assert!(s.version >= 1);
        assert_eq!(s.items[0].status, "downloading");
        // Nothing changes: the poll times out with the same version.
        let again = job.wait(s.version, Duration::from_millis(50));
        assert_eq!(again.version, s.version);
        tx.send(()).unwrap();
        let mut s = job.wait(s.version, Duration::from_secs(10));
        while !s.done {
            s = job.wait(s.version, Duration::from_secs(10));
        }
        assert_eq!(s.items[0].status, "done");
        assert_eq!(s.items[0].kind, "layer");
        assert_eq!(
            s.error,
            Some((super::super::code::NOT_FOUND, "no such image: x:1".into()))
        );
        assert!(jobs.get(&job.id).is_some());
        assert!(jobs.get("pull-99").is_none());
    }
}
