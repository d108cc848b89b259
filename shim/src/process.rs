//! One process of the task (the container's init, or an exec) as an explicit state machine.
//!
//! ```text
//!   Created --start--> Running --pause--> Paused --resume--> Running
//!      |                  |                  |
//!      +------------------+--- reaped -------+--> Stopped --delete--> (removed)
//! ```
//! An exec is `Created` from the Exec call until its Start runs it.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::io::{Copiers, StdioPaths};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Paused,
    Stopped,
}

/// Exit status and time, set once by the reaper path.
#[derive(Debug, Default)]
pub struct ExitCell {
    value: Mutex<Option<(u32, Timestamp)>>,
    cond: Condvar,
}

impl ExitCell {
    pub fn set(&self, status: u32, at: Timestamp) {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some((status, at));
        }
        self.cond.notify_all();
    }

    pub fn get(&self) -> Option<(u32, Timestamp)> {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Block until set, or until `limit` passes when one is given.
    pub fn wait(&self, limit: Option<Duration>) -> Option<(u32, Timestamp)> {
        let g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let g = match limit {
            None => self
                .cond
                .wait_while(g, |v| v.is_none())
                .unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                self.cond
                    .wait_timeout_while(g, d, |v| v.is_none())
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        g.clone()
    }
}

/// A process the shim tracks.
#[derive(Debug)]
pub struct Process {
    /// Empty for the init process.
    pub exec_id: String,
    pub pid: u32,
    pub stdio: StdioPaths,
    pub state: State,
    pub exit: Arc<ExitCell>,
    pub copiers: Copiers,
    /// For an exec: the process.json handed to `runtime exec --process`.
    pub spec: Option<PathBuf>,
    /// The pty master of a terminal process (for ResizePty).
    pub console: Option<std::fs::File>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            stdio,
            state: State::Created,
            exit: Arc::default(),
            copiers: Copiers::default(),
            spec: None,
            console: None,
        }
    }

    /// The state, with a recorded exit taking precedence.
    pub fn current(&self) -> State {
        if self.exit.get().is_some() {
            State::Stopped
        } else {
            self.state
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_wins_over_recorded_state() {
        let mut p = Process::new("", StdioPaths::default());
        p.state = State::Running;
        assert_eq!(p.current(), State::Running);
        p.exit.set(3, Timestamp::now());
        p.exit.set(9, Timestamp::now());
        assert_eq!(p.current(), State::Stopped);
        assert_eq!(p.exit.wait(None).unwrap().0, 3);
    }

    #[test]
    fn wait_times_out_when_not_exited() {
        let p = Process::new("e1", StdioPaths::default());
        assert!(p.exit.wait(Some(Duration::from_millis(10))).is_none());
    }
}
