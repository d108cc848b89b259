//! kapsel-runtime: the command line, shaped after runc's so that any tool driving runc can
//! drive this unchanged.

use clap::{Parser, Subcommand};
use kapsel_runtime::commands::{self, exec::ExecArgs, update::UpdateArgs, Global};
use kapsel_runtime::container::create::CreateOpts;
use kapsel_runtime::logging;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kapsel-runtime",
    about = "A runc-compatible OCI container runtime",
    disable_version_flag = true
)]
struct Cli {
    /// Root directory for container state (tmpfs recommended) [default: /run/kapsel-runtime;
    /// for a user other than root, $XDG_RUNTIME_DIR/kapsel-runtime when that is set]
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Log file (default: stderr)
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Debug logging
    #[arg(long, global = true)]
    debug: bool,
    /// Use the systemd cgroup driver
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Rootless mode: true, false or auto
    #[arg(long, global = true, default_value = "auto", num_args = 0..=1, default_missing_value = "true")]
    rootless: String,
    /// Print the version
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
struct CreateArgs {
    /// Path to the bundle directory
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// File to write the container's pid to
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Use a move mount and chroot instead of pivot_root
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a new session keyring
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass N more descriptors (3 to 3+N-1) to the container
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Container id
    id: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a starting config.json (with --rootless: one an unprivileged user can run)
    Spec {
        #[arg(short = 'b', long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container (its process waits for `start`)
    Create(CreateArgs),
    /// Start a created container
    Start { id: String },
    /// Create and start a container
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Detach from the container
        #[arg(short = 'd', long)]
        detach: bool,
        /// Keep the container's state after it exits
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state
    State { id: String },
    /// List containers
    #[command(alias = "ls")]
    List {
        #[arg(short = 'f', long, value_enum, default_value = "table")]
        format: commands::list::Format,
        /// Only ids
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Send a signal to a container
    Kill {
        /// Signal every process of the container
        #[arg(short = 'a', long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container
    Delete {
        /// Kill and delete a running container
        #[arg(short = 'f', long)]
        force: bool,
        id: String,
    },
    /// List a container's processes
    Ps {
        #[arg(short = 'f', long, value_enum, default_value = "table")]
        format: commands::ps::Format,
        id: String,
        /// Arguments for ps (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run a process in a container
    Exec(ExecArgs),
    /// Freeze a container's processes
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Change a container's resource limits
    Update {
        #[command(flatten)]
        args: UpdateArgs,
        id: String,
    },
    /// Print container stats and OOM events as JSON
    Events {
        /// Print stats once and exit
        #[arg(long)]
        stats: bool,
        /// Interval between stats (e.g. 5s, 500ms)
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Print what this runtime implements (runtime-spec features)
    Features,
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid duration {s:?}: use e.g. 5s or 500ms"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => anyhow::bail!("invalid duration {s:?}: use e.g. 5s or 500ms"),
    };
    if secs <= 0.0 {
        anyhow::bail!("invalid duration {s:?}: must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn create_opts(g: &Global, a: CreateArgs) -> CreateOpts {
    CreateOpts {
        root: g.root.clone(),
        id: a.id,
        bundle: a.bundle,
        pid_file: a.pid_file,
        console_socket: a.console_socket,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        rootless: g.rootless,
    }
}

/// Where state lives without `--root`: /run/kapsel-runtime for root; a user other than root
/// cannot write there, and gets $XDG_RUNTIME_DIR/kapsel-runtime instead when that is set (as
/// runc uses $XDG_RUNTIME_DIR/runc).
fn default_root() -> PathBuf {
    if !nix::unistd::geteuid().is_root() {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("kapsel-runtime");
        }
    }
    PathBuf::from("/run/kapsel-runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let explicit_rootless = cli.rootless == "true";
    let rootless = match cli.rootless.as_str() {
        "true" => true,
        "false" => false,
        "auto" => !nix::unistd::geteuid().is_root(),
        other => anyhow::bail!("--rootless {other:?}: use true, false or auto"),
    };
    let g = Global {
        root: cli.root.unwrap_or_else(default_root),
        systemd_cgroup: cli.systemd_cgroup,
        rootless,
    };
    let Some(cmd) = cli.cmd else {
        anyhow::bail!("no command given; see kapsel-runtime --help");
    };
    match cmd {
        Cmd::Spec { bundle } => commands::spec::run(&bundle, explicit_rootless),
        Cmd::Create(a) => commands::create::run(&g, create_opts(&g, a)),
        Cmd::Start { id } => commands::start::run(&g, &id),
        Cmd::Run {
            create,
            detach,
            keep,
        } => commands::run::run(&g, create_opts(&g, create), detach, keep),
        Cmd::State { id } => commands::state::run(&g, &id),
        Cmd::List { format, quiet } => commands::list::run(&g, format, quiet),
        Cmd::Kill { all, id, signal } => commands::kill::run(&g, &id, &signal, all),
        Cmd::Delete { force, id } => commands::delete::run(&g, &id, force),
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => commands::ps::run(&g, &id, format, &ps_args),
        Cmd::Exec(a) => commands::exec::run(&g, &a),
        Cmd::Pause { id } => commands::pause::pause(&g, &id),
        Cmd::Resume { id } => commands::pause::resume(&g, &id),
        Cmd::Update { args, id } => commands::update::run(&g, &id, &args),
        Cmd::Events {
            stats,
            interval,
            id,
        } => commands::events::run(&g, &id, stats, parse_duration(&interval)?),
        Cmd::Features => commands::features::run(),
    }
}

/// Whether the command line names `create`, `run` or `exec`: the first argument that is
/// neither a global flag nor the value of one. Global flags that take a value in the next
/// argument: --root, --log, --log-format (and --rootless only as --rootless=VALUE, or with
/// true/false/auto following). Anything unexpected errs on the side of re-executing.
fn reexec_needed(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let Some(a) = a.to_str() else { return true };
        match a {
            "--root" | "--log" | "--log-format" => {
                args.next();
            }
            "--rootless" => {
                if args
                    .peek()
                    .and_then(|v| v.to_str())
                    .is_some_and(|v| matches!(v, "true" | "false" | "auto"))
                {
                    args.next();
                }
            }
            _ if a.starts_with('-') => {}
            cmd => return matches!(cmd, "create" | "run" | "exec"),
        }
    }
    false
}

fn main() {
    // Like runc: a closed stdout (`kapsel-runtime list | head`) ends the process quietly.
    // SAFETY: restoring the default disposition of SIGPIPE before anything else runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Commands that put a runtime process inside a container run from a sealed copy. Decided
    // from argv before clap parses it, so that the arguments are parsed once, by the copy.
    if reexec_needed(std::env::args_os().skip(1)) {
        if let Err(e) = kapsel_runtime::sealed::reexec_sealed() {
            eprintln!("kapsel-runtime: cannot re-execute from a sealed copy of itself: {e}");
            std::process::exit(1);
        }
    }
    let cli = Cli::parse();
    if cli.version {
        println!(
            "kapsel-runtime version {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            kapsel_runtime::spec::OCI_VERSION
        );
        return;
    }
    let format = match cli.log_format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    let log_to_file = cli.log.is_some();
    logging::init(cli.log.as_deref(), format, cli.debug);
    match dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!("{msg}");
            if log_to_file {
                eprintln!("kapsel-runtime: {msg}");
            }
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reexec_needed;

    fn needs(line: &str) -> bool {
        reexec_needed(line.split_whitespace().map(Into::into))
    }

    #[test]
    fn reexec_is_decided_from_the_command_name() {
        assert!(needs("create -b . x"));
        assert!(needs("--root /run/x --log create --log-format json run x"));
        assert!(needs("--root create run x"));
        assert!(needs("--debug --rootless true exec -t x sh"));
        assert!(needs("--rootless=true exec x sh"));
        assert!(!needs("--root run state x"));
        assert!(!needs("--log-format json delete -f x"));
        assert!(!needs("list"));
        assert!(!needs("--version"));
        assert!(!needs("state run"));
    }
}
