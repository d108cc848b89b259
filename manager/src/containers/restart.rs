//! Restart policies, as Docker's: `no`, `on-failure[:N]`, `always`, `unless-stopped`, and the
//! delay between restarts (100 ms doubling up to one minute, back to 100 ms after a run of ten
//! seconds or more).

use std::time::Duration;

/// A parsed `--restart` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    No,
    /// At most `max` restarts (0: no limit) after a non-zero exit.
    OnFailure {
        max: u32,
    },
    Always,
    UnlessStopped,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error(
        "invalid restart policy {0:?}: use no, always, unless-stopped or on-failure[:max-retries]"
    )]
    Unknown(String),
    #[error("invalid restart policy {0:?}: maximum retry count must be a non-negative number")]
    BadCount(String),
    #[error("invalid restart policy {0:?}: maximum retry count can only be used with on-failure")]
    CountNotAllowed(String),
}

impl std::str::FromStr for Policy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Policy, PolicyError> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let p = match name {
            "" | "no" => Policy::No,
            "always" => Policy::Always,
            "unless-stopped" => Policy::UnlessStopped,
            "on-failure" => {
                let max = match count {
                    None => 0,
                    Some(c) => c
                        .parse::<u32>()
                        .map_err(|_| PolicyError::BadCount(s.to_string()))?,
                };
                return Ok(Policy::OnFailure { max });
            }
            _ => return Err(PolicyError::Unknown(s.to_string())),
        };
        if count.is_some() {
            return Err(PolicyError::CountNotAllowed(s.to_string()));
        }
        Ok(p)
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::No => f.write_str("no"),
            Policy::OnFailure { max: 0 } => f.write_str("on-failure"),
            Policy::OnFailure { max } => write!(f, "on-failure:{max}"),
            Policy::Always => f.write_str("always"),
            Policy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl Policy {
    /// Docker's `Name` and `MaximumRetryCount` for inspect.
    pub fn docker_name(&self) -> (&'static str, u32) {
        match self {
            Policy::No => ("no", 0),
            Policy::OnFailure { max } => ("on-failure", *max),
            Policy::Always => ("always", 0),
            Policy::UnlessStopped => ("unless-stopped", 0),
        }
    }

    /// Whether a container that exited on its own with `exit_code`, after `restarts` restarts,
    /// is started again. A container the user stopped is never restarted on exit.
    pub fn restart_on_exit(&self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            Policy::No => false,
            Policy::OnFailure { max } => exit_code != 0 && (*max == 0 || restarts < *max),
            Policy::Always | Policy::UnlessStopped => true,
        }
    }

    /// Whether kapseld starts the container when it starts (the container was running, or
    /// restarting, when the daemon went away). `always` restarts even a container the user
    /// stopped, as dockerd does at its start; `unless-stopped` does not.
    pub fn start_with_daemon(&self, was_running: bool, stopped_by_user: bool) -> bool {
        match self {
            Policy::No => false,
            Policy::OnFailure { .. } => was_running && !stopped_by_user,
            // Stopped by the user: it ran once (a container never started stays created).
            Policy::Always => was_running || stopped_by_user,
            Policy::UnlessStopped => !stopped_by_user,
        }
    }
}

/// The first delay before a restart.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// The delay before the next restart, given the previous delay (`None`: first restart) and
/// how long the container ran.
pub fn next_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        _ if ran_for >= BACKOFF_RESET_AFTER => BACKOFF_START,
        None => BACKOFF_START,
        Some(d) => (d * 2).min(BACKOFF_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_docker_spells_them() {
        assert_eq!("no".parse(), Ok(Policy::No));
        assert_eq!("".parse(), Ok(Policy::No));
        assert_eq!("always".parse(), Ok(Policy::Always));
        assert_eq!("unless-stopped".parse(), Ok(Policy::UnlessStopped));
        assert_eq!("on-failure".parse(), Ok(Policy::OnFailure { max: 0 }));
        assert_eq!("on-failure:3".parse(), Ok(Policy::OnFailure { max: 3 }));
        assert_eq!(
            "on-failure:x".parse::<Policy>(),
            Err(PolicyError::BadCount("on-failure:x".into()))
        );
        assert_eq!(
            "always:2".parse::<Policy>(),
            Err(PolicyError::CountNotAllowed("always:2".into()))
        );
        let e = "sometimes".parse::<Policy>().unwrap_err();
        assert!(e.to_string().contains("\"sometimes\""), "{e}");
        for s in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:5",
        ] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn exits_restart_by_policy() {
        let of3 = Policy::OnFailure { max: 3 };
        assert!(!Policy::No.restart_on_exit(1, 0, false));
        assert!(of3.restart_on_exit(1, 2, false));
        assert!(!of3.restart_on_exit(1, 3, false));
        assert!(!of3.restart_on_exit(0, 0, false));
        assert!(Policy::OnFailure { max: 0 }.restart_on_exit(2, 1000, false));
        assert!(Policy::Always.restart_on_exit(0, 9, false));
        assert!(!Policy::Always.restart_on_exit(0, 9, true));
        assert!(Policy::UnlessStopped.restart_on_exit(0, 9, false));
        assert!(!Policy::UnlessStopped.restart_on_exit(0, 9, true));
    }

    #[test]
    fn daemon_start_follows_docker() {
        assert!(Policy::Always.start_with_daemon(false, true));
        assert!(!Policy::Always.start_with_daemon(false, false));
        assert!(!Policy::UnlessStopped.start_with_daemon(true, true));
        assert!(Policy::UnlessStopped.start_with_daemon(true, false));
        assert!(!Policy::No.start_with_daemon(true, false));
        assert!(Policy::OnFailure { max: 1 }.start_with_daemon(true, false));
        assert!(!Policy::OnFailure { max: 1 }.start_with_daemon(false, false));
    }

    #[test]
    fn delays_double_up_to_a_minute_and_reset_after_a_long_run() {
        let short = Duration::from_millis(50);
        let mut d = next_delay(None, short);
        assert_eq!(d, BACKOFF_START);
        for _ in 0..20 {
            d = next_delay(Some(d), short);
        }
        assert_eq!(d, BACKOFF_MAX);
        assert_eq!(next_delay(Some(d), Duration::from_secs(11)), BACKOFF_START);
        assert_eq!(
            next_delay(Some(Duration::from_millis(400)), short),
            Duration::from_millis(800)
        );
    }
}
