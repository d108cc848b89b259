//! kapsel-runtime: a runc-compatible OCI runtime.
//!
//! Layout: `spec` (config.json types), `container` (state between commands and the parent side
//! of create), `init` (set-up inside the container, in phases), `process` (the parent/init
//! protocol), `syscall` (the kernel seam), `seccomp` (the `linux.seccomp` BPF compiler),
//! `cgroups`, `hooks`, and `commands` (one file per CLI command).

pub mod cgroups;
pub mod commands;
pub mod container;
pub mod hooks;
pub mod init;
pub mod logging;
pub mod process;
pub mod sealed;
pub mod seccomp;
pub mod spec;
pub mod syscall;
pub mod time;
