//! containerd-shim-kapsel-v2: the per-container shim (containerd runtime v2 contract, task API
//! `containerd.task.v2` as containerd 1.6/1.7 speak it). Synchronous: threads, no async runtime,
//! so an idle shim stays small.

mod args;
mod cgroup;
mod events;
mod io;
mod memory;
mod mount;
mod oom;
mod process;
mod reaper;
mod runtime;
mod service;
mod shim;
mod stats;
mod task;

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let args = match args::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-kapsel-v2: {e}");
            return 2;
        }
    };
    let result = match args.action {
        args::Action::Start => shim::start(&args),
        args::Action::Delete => shim::delete(&args),
        args::Action::Serve => shim::serve(&args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            eprintln!("containerd-shim-kapsel-v2: {msg}");
            1
        }
    }
}
