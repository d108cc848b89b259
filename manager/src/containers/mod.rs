//! Containers: the OCI spec of a container from its image and `kapsel run` options (`spec`,
//! with `options`, `user`, `seccomp_default`).

pub mod options;
pub mod seccomp_default;
pub mod spec;
pub mod user;

pub use options::{NetworkMode, RestartPolicy, RunOptions};
pub use spec::{
    create_workdir, find_init_binary, generate, prepare_container_dir, stop_signal, SpecContext,
    SpecError,
};
