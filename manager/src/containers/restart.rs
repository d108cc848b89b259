//! Restart policies as Docker applies them (`--restart`, parsed by
//! [`RestartPolicy`](super::RestartPolicy)): whether an exit or a kapseld start restarts a
//! container, and the delay between restarts (100 ms doubling up to one minute, back to 100 ms
//! after a run of ten seconds or more).

use std::time::Duration;

use super::RestartPolicy;

impl RestartPolicy {
    /// Docker's `Name` and `MaximumRetryCount` for inspect.
    pub fn docker_name(&self) -> (&'static str, u32) {
        match self {
            RestartPolicy::No => ("no", 0),
            RestartPolicy::OnFailure { max_retries } => ("on-failure", max_retries.unwrap_or(0)),
            RestartPolicy::Always => ("always", 0),
            RestartPolicy::UnlessStopped => ("unless-stopped", 0),
        }
    }

    /// Whether a container that exited on its own with `exit_code`, after `restarts` restarts,
    /// is started again. A container the user stopped is never restarted on exit.
    pub fn restart_on_exit(&self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && max_retries.is_none_or(|m| restarts < m)
            }
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }

    /// Whether kapseld starts the container when it starts (the container was running, or
    /// restarting, when the daemon went away). `always` restarts even a container the user
    /// stopped, as dockerd does at its start; `unless-stopped` does not.
    pub fn start_with_daemon(&self, was_running: bool, stopped_by_user: bool) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { .. } => was_running && !stopped_by_user,
            // Stopped by the user: it ran once (a container never started stays created).
            RestartPolicy::Always => was_running || stopped_by_user,
            RestartPolicy::UnlessStopped => was_running && !stopped_by_user,
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
    fn exits_restart_by_policy() {
        let of3 = RestartPolicy::OnFailure {
            max_retries: Some(3),
        };
        assert!(!RestartPolicy::No.restart_on_exit(1, 0, false));
        assert!(of3.restart_on_exit(1, 2, false));
        assert!(!of3.restart_on_exit(1, 3, false));
        assert!(!of3.restart_on_exit(0, 0, false));
        let forever = RestartPolicy::OnFailure { max_retries: None };
        assert!(forever.restart_on_exit(2, 1000, false));
        assert!(RestartPolicy::Always.restart_on_exit(0, 9, false));
        assert!(!RestartPolicy::Always.restart_on_exit(0, 9, true));
        assert!(RestartPolicy::UnlessStopped.restart_on_exit(0, 9, false));
        assert!(!RestartPolicy::UnlessStopped.restart_on_exit(0, 9, true));
        assert_eq!(of3.docker_name(), ("on-failure", 3));
    }

    #[test]
    fn daemon_start_follows_docker() {
        assert!(RestartPolicy::Always.start_with_daemon(false, true));
        assert!(!RestartPolicy::Always.start_with_daemon(false, false));
        assert!(!RestartPolicy::UnlessStopped.start_with_daemon(true, true));
        assert!(RestartPolicy::UnlessStopped.start_with_daemon(true, false));
        assert!(!RestartPolicy::No.start_with_daemon(true, false));
        let of = RestartPolicy::OnFailure {
            max_retries: Some(1),
        };
        assert!(of.start_with_daemon(true, false));
        assert!(!of.start_with_daemon(false, false));
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
