//! Shared helpers for the root-only integration tests.
//!
//! The tests drive a runc-compatible binary the way a user or a client
//! (containerd, podman, dockerd) does — through its command line — never
//! through the runtime crate. Which binary is set by `KAPSEL_RUNTIME`
//! (default: `target/release/kapsel-runtime`, then `target/debug/`); every
//! expectation shared with runc is validated with `KAPSEL_RUNTIME=/usr/sbin/runc`.
//!
//! Conventions:
//! - Each test makes its own [`Runtime`] (a private `--root`), its own
//!   [`Bundle`]s and ids from [`Runtime::new_id`], so tests may run in parallel.
//!   Dropping the `Runtime` force-deletes its containers and removes their
//!   cgroups, also when the test panics.
//! - Tests named `kapsel_*` hold expectations that are ours only: where kapsel
//!   deliberately differs from runc on this machine, or the wording of errors.
//!   Against another runtime they print why and return.
//! - Missing root, fixtures or client programs fail the test; nothing is
//!   silently skipped.

pub mod bundle;
pub mod clients;
pub mod command;
pub mod daemon;
pub mod env;
pub mod fd;
pub mod host;
pub mod kapseld;
pub mod runtime;
pub mod user;

pub use bundle::Bundle;
pub use command::{host, host_ok, host_sh, Cmd, CmdOutput};
pub use env::{require_program, require_root, sysprobe, unique, Fixtures, RUNC};
pub use host::{cgroup_dir, pid_alive, proc_status_field, wait_until, Netns};
pub use runtime::{Flavor, Runtime};
pub use user::TestUser;

use std::time::Duration;

/// Default patience for things that happen asynchronously (a container exiting...).
pub const SETTLE: Duration = Duration::from_secs(10);

/// For `kapsel_*` tests: true when `rt` is kapsel-runtime; otherwise prints
/// that the kapsel-only expectation was not checked, and the test returns.
pub fn kapsel_only(rt: &Runtime) -> bool {
    if rt.is_kapsel() {
        return true;
    }
    eprintln!(
        "not checked: this expectation is kapsel-runtime's own and {} is `{}`",
        rt.bin().display(),
        rt.version()
    );
    false
}

/// A second runtime to compare with: real runc, when the runtime under test
/// is something else and runc is installed.
pub fn runc_for_comparison(rt: &Runtime) -> Option<Runtime> {
    if rt.is_runc() || !std::path::Path::new(RUNC).exists() {
        eprintln!(
            "not compared: the runtime under test is runc itself, or {RUNC} is not installed"
        );
        return None;
    }
    Some(Runtime::with_binary(RUNC))
}

/// Capability names the kernel knows (0..=40), in bit order: CAP_CHOWN is bit 0.
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability mask of a list of names (as /proc/PID/status prints it, in hex).
pub fn cap_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |mask, name| {
        let bit = ALL_CAPS
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("unknown capability {name}"));
        mask | (1 << bit)
    })
}

/// Parse a `Cap*:` value from /proc/PID/status (`000001fffeffffff`).
#[track_caller]
pub fn parse_cap_hex(value: &str) -> u64 {
    u64::from_str_radix(value.trim(), 16).unwrap_or_else(|e| panic!("bad cap mask {value:?}: {e}"))
}

/// The named field of a `/proc/.../status` text (`CapEff`), without the label.
#[track_caller]
pub fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} line in:\n{status}"))
}
