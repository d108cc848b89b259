//! `linux.seccomp`: a pure-Rust compiler from the OCI profile to a seccomp BPF program, and
//! loading it in init.
//!
//! - [`compile`] checks a profile and builds one program for x86_64, x86 and x32 (tables in
//!   `tables.rs`, generated from the kernel headers by `gen-tables.py`). Semantics follow
//!   runc + libseccomp: unknown syscall names are skipped, a rule with the default's action is
//!   dropped, an unconditional rule for a syscall wins over its conditional ones, a syscall's
//!   conditional rules are ORed (first match in profile order gives the action) and the
//!   arguments of one rule are ANDed, syscalls newer than any the profile names answer ENOSYS,
//!   and other architectures get SCMP_ACT_KILL.
//! - [`load`] runs in init (`init::finalize_identity`, also for `exec`): it loads the filter
//!   through the [`Kernel`] seam and, when a rule is SCMP_ACT_NOTIFY, tells the parent the
//!   listener's descriptor number and waits while the parent hands it to the agent
//!   ([`notify::forward`]), as runc does.

mod bpf;
mod compile;
pub mod notify;
mod tables;

#[cfg(test)]
mod tests;

pub use bpf::SockFilter;
pub use compile::{Arch, Filter};

use crate::process::message::{Channel, Message};
use crate::spec::{Seccomp, SeccompAction, SeccompOperator, Spec};
use crate::syscall::Kernel;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

pub use compile::{
    FLAG_LOG, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_TSYNC, FLAG_WAIT_KILLABLE_RECV,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: SCMP_ACT_NOTIFY cannot be the defaultAction")]
    NotifyDefault,
    #[error("linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath, the seccomp agent's unix socket")]
    NoListenerPath,
    #[error(
        "linux.seccomp: SCMP_ACT_NOTIFY cannot be used for {name}: the runtime makes that \
         syscall before the agent has the listener"
    )]
    NotifyOn { name: String },
    #[error("linux.seccomp: unknown architecture {name:?}")]
    UnknownArch { name: String },
    #[error(
        "linux.seccomp: unknown flag {name:?} (known: SECCOMP_FILTER_FLAG_TSYNC, \
         SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW, \
         SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)"
    )]
    UnknownFlag { name: String },
    #[error("linux.seccomp: errnoRet {value} is too large (at most 65535)")]
    Errno { value: u32 },
    #[error("linux.seccomp: syscalls {names}: argument index {index} is out of range (0 to 5)")]
    ArgIndex { names: String, index: u32 },
    #[error("linux.seccomp: the filter has {len} instructions, more than the kernel's 4096")]
    TooLong { len: usize },
    #[error("linux.seccomp: this runtime has no syscall tables for the architecture it runs on")]
    UnsupportedHost,
    #[error("load the seccomp filter: {source}")]
    Load {
        #[source]
        source: io::Error,
    },
    #[error("pass the seccomp listener to the runtime: {source}")]
    Handoff {
        #[source]
        source: io::Error,
    },
    #[error("seccomp agent: {0}")]
    Agent(String),
}

/// Compiles `profile` for the architecture this runtime runs on (plus those it lists).
pub fn compile(profile: &Seccomp) -> Result<Filter, SeccompError> {
    let native = Arch::native().ok_or(SeccompError::UnsupportedHost)?;
    compile::compile(profile, native)
}

/// The compiled filter of `spec`, if it has `linux.seccomp`.
pub fn for_spec(spec: &Spec) -> Result<Option<Filter>, SeccompError> {
    let Some(profile) = spec.linux.as_ref().and_then(|l| l.seccomp.as_ref()) else {
        return Ok(None);
    };
    let start = Instant::now();
    let filter = compile(profile)?;
    tracing::debug!(
        "seccomp: compiled {} rules into {} instructions in {:?}",
        profile.syscalls.len(),
        filter.program.len(),
        start.elapsed()
    );
    Ok(Some(filter))
}

/// Loads `filter` into the calling thread; returns the notification listener when the filter
/// has one. Kernels before 5.19 lack WAIT_KILLABLE_RECV: the filter is then loaded without it.
pub fn install(k: &dyn Kernel, filter: &Filter) -> Result<Option<OwnedFd>, SeccompError> {
    let res = match k.seccomp_filter(&filter.program, filter.flags) {
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL)
                && filter.flags & FLAG_WAIT_KILLABLE_RECV != 0 =>
        {
            tracing::warn!(
                "seccomp: the kernel refused SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (it needs \
                 Linux 5.19); loading the filter without it"
            );
            k.seccomp_filter(&filter.program, filter.flags & !FLAG_WAIT_KILLABLE_RECV)
        }
        other => other,
    };
    res.map_err(|source| SeccompError::Load { source })
}

/// Init's step: loads `filter`, and hands a listener to the parent over `chan` (which forwards
/// it to the agent) before going on.
pub fn load(k: &dyn Kernel, filter: &Filter, chan: &Channel) -> Result<(), SeccompError> {
    let start = Instant::now();
    let listener = install(k, filter)?;
    tracing::debug!("seccomp: filter loaded in {:?}", start.elapsed());
    if let Some(fd) = listener {
        chan.send(&Message::SeccompListener(fd.as_raw_fd()))
            .map_err(|source| SeccompError::Handoff { source })?;
        // The parent copies the descriptor out of this process: keep it open until it is done.
        chan.expect(Message::SeccompListenerDone)
            .map_err(SeccompError::Agent)?;
    }
    Ok(())
}

/// The `linux.seccomp` object of `features`.
pub fn features() -> serde_json::Value {
    let known: Vec<&str> = compile::FLAGS.iter().map(|(n, _)| *n).collect();
    let supported: Vec<&str> = compile::FLAGS
        .iter()
        .filter(|(_, v)| flag_supported(*v))
        .map(|(n, _)| *n)
        .collect();
    serde_json::json!({
        "enabled": true,
        "actions": ACTIONS.iter().map(|a| action_name(*a)).collect::<Vec<_>>(),
        "operators": OPERATORS.iter().map(|o| operator_name(*o)).collect::<Vec<_>>(),
        "archs": Arch::ALL.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "knownFlags": known,
        "supportedFlags": supported,
    })
}

const ACTIONS: [SeccompAction; 9] = [
    SeccompAction::Allow,
    SeccompAction::Errno,
    SeccompAction::Kill,
    SeccompAction::KillProcess,
    SeccompAction::KillThread,
    SeccompAction::Log,
    SeccompAction::Notify,
    SeccompAction::Trace,
    SeccompAction::Trap,
];

const OPERATORS: [SeccompOperator; 7] = [
    SeccompOperator::Equal,
    SeccompOperator::GreaterOrEqual,
    SeccompOperator::GreaterThan,
    SeccompOperator::LessOrEqual,
    SeccompOperator::LessThan,
    SeccompOperator::MaskedEqual,
    SeccompOperator::NotEqual,
];

fn action_name(a: SeccompAction) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn operator_name(o: SeccompOperator) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether the running kernel knows filter flag `flag`: with a NULL program, a known flag
/// fails with EFAULT and an unknown one with EINVAL (libseccomp probes the same way).
fn flag_supported(flag: u32) -> bool {
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    if flag == FLAG_TSYNC {
        return true;
    }
    // WAIT_KILLABLE_RECV is only valid next to NEW_LISTENER.
    let flags = if flag == FLAG_WAIT_KILLABLE_RECV {
        flag | FLAG_NEW_LISTENER
    } else {
        flag
    };
    // SAFETY: seccomp(2) with a NULL program reads no memory: it fails (EFAULT or EINVAL)
    // before installing anything.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            std::ptr::null::<libc::c_void>(),
        )
    };
    rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}
