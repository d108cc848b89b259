//! The container commands: `run`, `create`, `start`, `stop`, `restart`, `kill`, `rm`, `ps`,
//! `logs`, `exec`, `attach`, `inspect`, `stats`, `top`, `pause`, `unpause`, `wait`, `rename`,
//! `update`, `container ...`, `system prune`, with Docker's flags, tables and exit codes:
//! 125 when kapsel itself fails (bad flag value, daemon error), 126 when the command cannot
//! be run, 127 when it does not exist, otherwise the container's own status.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use clap::{Args, Subcommand};
use kapsel_proto::containers as cpb;

use super::client::{Conn, Error, Result};
use super::table::{human_size, short_id, Table};
use crate::containers::RunOptions;
use crate::images::time::{format_rfc3339, human_duration};

/// Docker's exit status for kapsel's own failures in run/create/start.
pub const EXIT_KAPSEL: i32 = 125;

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// Create and run a new container from an image.
    #[command(override_usage = "kapsel run [OPTIONS] IMAGE [COMMAND] [ARG...]")]
    Run(Box<RunArgs>),
    /// Create a new container.
    #[command(override_usage = "kapsel create [OPTIONS] IMAGE [COMMAND] [ARG...]")]
    Create(Box<RunArgs>),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// List containers.
    Ps(PsArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(AttachArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(StatsArgs),
    /// Display the running processes of a container.
    Top(TopArgs),
    /// Pause all processes within one or more containers.
    Pause(Targets),
    /// Unpause all processes within one or more containers.
    Unpause(Targets),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(Targets),
    /// Rename a container.
    Rename(RenameArgs),
    /// Update configuration of one or more containers.
    Update(UpdateArgs),
}

/// `kapsel container ...`
#[derive(Subcommand, Debug)]
pub enum ContainerGroup {
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Remove all stopped containers.
    Prune(ForceArgs),
    #[command(flatten)]
    Cmd(ContainerCmd),
}

/// `kapsel system ...`
#[derive(Subcommand, Debug)]
pub enum SystemGroup {
    /// Remove stopped containers and dangling images.
    Prune(SystemPruneArgs),
}

#[derive(Args, Debug, Default)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (-h is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run container in background and print container ID.
    #[arg(short, long)]
    detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to take it from here).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file")]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    #[command(flatten)]
    resources: ResourceArgs,
    /// Add additional groups to join (a name from the image's /etc/group, or a gid).
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// Mount the container's root filesystem as read only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Mount a tmpfs directory (PATH[:OPTIONS]).
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Add Linux capabilities.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    privileged: bool,
    /// Security options (seccomp=FILE|unconfined, no-new-privileges).
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Ulimit options (nofile=1024:2048).
    #[arg(long)]
    ulimit: Vec<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Set meta data on a container (KEY=VALUE).
    #[arg(short, long)]
    label: Vec<String>,
    /// Restart policy (no, on-failure[:max-retries], always, unless-stopped).
    #[arg(long, default_value = "no")]
    restart: String,
    /// Runtime to use for this container (the OCI runtime binary).
    #[arg(long)]
    runtime: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Connect a container to a network: none or host (bridge networking is not there yet).
    #[arg(long = "network", alias = "net", default_value = "none")]
    network: String,
    /// Bind mount a volume (HOST-PATH:CONTAINER-PATH, NAME:CONTAINER-PATH or CONTAINER-PATH; then [:ro|rw]).
    #[arg(short, long)]
    volume: Vec<String>,
    /// Signal to stop the container.
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<i64>,
    /// Log driver options (json-file): max-size=SIZE, max-file=N.
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// The image, then the command and its arguments. Everything after the image belongs to
    /// the command, flags too (`busybox -c ...`), as with Docker.
    #[arg(
        value_name = "ARG",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    args: Vec<String>,
}

/// The first of `args` and the rest (clap makes sure the first is there).
fn head_and_tail(args: &[String]) -> (&str, &[String]) {
    args.split_first()
        .map_or(("", &[]), |(head, tail)| (head.as_str(), tail))
}

impl RunArgs {
    fn image(&self) -> &str {
        head_and_tail(&self.args).0
    }

    fn command(&self) -> &[String] {
        head_and_tail(&self.args).1
    }
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[arg(required = true)]
    containers: Vec<String>,
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    interactive: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[arg(required = true)]
    containers: Vec<String>,
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "timeout", alias = "time")]
    timeout: Option<i32>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[arg(required = true)]
    containers: Vec<String>,
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(required = true)]
    containers: Vec<String>,
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    volumes: bool,
}

#[derive(Args, Debug, Default)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter output based on conditions provided (name=, id=, status=, label=, exited=, ancestor=).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Show n last created containers (includes all states).
    #[arg(long = "last")]
    last: Option<usize>,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    latest: bool,
    /// `table` (default) or `json`.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    container: String,
    /// Follow log output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all").
    #[arg(long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Show logs since timestamp (RFC 3339) or relative (e.g. 42m).
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp or relative time.
    #[arg(long)]
    until: Option<String>,
}

#[derive(Args, Debug)]
#[command(override_usage = "kapsel exec [OPTIONS] CONTAINER COMMAND [ARG...]")]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Username or UID.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Give extended privileges to the command.
    #[arg(long)]
    privileged: bool,
    /// The container, then the command and its arguments (flags after the container belong
    /// to the command).
    #[arg(
        value_name = "ARG",
        required = true,
        num_args = 2..,
        trailing_var_arg = true
    )]
    args: Vec<String>,
}

impl ExecArgs {
    fn container(&self) -> &str {
        head_and_tail(&self.args).0
    }

    fn command(&self) -> &[String] {
        head_and_tail(&self.args).1
    }
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    container: String,
    /// Do not attach STDIN.
    #[arg(long = "no-stdin")]
    no_stdin: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    containers: Vec<String>,
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Do not truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// `table` (default) or `json`.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Targets {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[arg(required = true)]
    containers: Vec<String>,
    #[command(flatten)]
    resources: ResourceArgs,
    /// Restart policy to apply when a container exits.
    #[arg(long)]
    restart: Option<String>,
}

/// The cgroup limits `run`, `create` and `update` share.
#[derive(Args, Debug, Default)]
pub struct ResourceArgs {
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 for unlimited swap.
    #[arg(long = "memory-swap")]
    memory_swap: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<String>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// CPUs in which to allow execution (0-3, 0,1).
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
}

/// [`ResourceArgs`] parsed: sizes in bytes, CPUs as a number.
struct Resources {
    memory: Option<i64>,
    memory_swap: Option<i64>,
    cpus: Option<f64>,
}

impl ResourceArgs {
    fn parse(&self) -> Result<Resources> {
        let ram =
            |flag: &str, v: &Option<String>| v.as_deref().map(|m| parse_ram(flag, m)).transpose();
        Ok(Resources {
            memory: ram("--memory", &self.memory)?,
            memory_swap: ram("--memory-swap", &self.memory_swap)?,
            cpus: self.cpus.as_deref().map(parse_cpus).transpose()?,
        })
    }
}

#[derive(Args, Debug)]
pub struct ForceArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Prune anonymous volumes.
    #[arg(long)]
    volumes: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// Runs a container command; returns the exit status (errors already printed).
pub fn main(conn: Result<Conn>, cmd: ContainerCmd) -> i32 {
    let exit_on_err = match &cmd {
        ContainerCmd::Run(_) | ContainerCmd::Create(_) => EXIT_KAPSEL,
        _ => 1,
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kapsel: {e}");
            return exit_on_err;
        }
    };
    let r = match cmd {
        ContainerCmd::Run(a) => run(&conn, *a, false),
        ContainerCmd::Create(a) => run(&conn, *a, true),
        ContainerCmd::Start(a) => start(&conn, a),
        ContainerCmd::Stop(a) => each(
            &a.containers,
            |c| {
                let req = stop_req(&conn, c, a.timeout);
                conn.containers.stop(conn.ctx(), &req).map(|_| ())
            },
            &conn,
        ),
        ContainerCmd::Restart(a) => each(
            &a.containers,
            |c| {
                let req = stop_req(&conn, c, a.timeout);
                conn.containers.restart(conn.ctx(), &req).map(|_| ())
            },
            &conn,
        ),
        ContainerCmd::Kill(a) => each(
            &a.containers,
            |c| {
                let req = cpb::KillRequest {
                    namespace: conn.namespace.clone(),
                    container: c.to_string(),
                    signal: a.signal.clone(),
                    ..Default::default()
                };
                conn.containers.kill(conn.ctx(), &req).map(|_| ())
            },
            &conn,
        ),
        ContainerCmd::Rm(a) => each(
            &a.containers,
            |c| {
                let req = cpb::RemoveRequest {
                    namespace: conn.namespace.clone(),
                    container: c.to_string(),
                    force: a.force,
                    volumes: a.volumes,
                    ..Default::default()
                };
                conn.containers.remove(conn.ctx(), &req).map(|_| ())
            },
            &conn,
        ),
        ContainerCmd::Ps(a) => ps(&conn, a).map(|()| 0),
        ContainerCmd::Logs(a) => logs(&conn, a).map(|()| 0),
        ContainerCmd::Exec(a) => exec(&conn, a),
        ContainerCmd::Attach(a) => attach(&conn, a),
        ContainerCmd::Stats(a) => stats(&conn, a).map(|()| 0),
        ContainerCmd::Top(a) => top(&conn, a).map(|()| 0),
        ContainerCmd::Pause(a) => each(
            &a.containers,
            |c| {
                conn.containers
                    .pause(conn.ctx(), &creq(&conn, c))
                    .map(|_| ())
            },
            &conn,
        ),
        ContainerCmd::Unpause(a) => each(
            &a.containers,
            |c| {
                conn.containers
                    .unpause(conn.ctx(), &creq(&conn, c))
                    .map(|_| ())
            },
            &conn,
        ),
        ContainerCmd::Wait(a) => wait_cmd(&conn, a),
        ContainerCmd::Rename(a) => {
            let req = cpb::RenameRequest {
                namespace: conn.namespace.clone(),
                container: a.container.clone(),
                new_name: a.new_name.clone(),
                ..Default::default()
            };
            conn.containers
                .rename(conn.ctx(), &req)
                .map(|_| 0)
                .map_err(|e| conn.err(e))
        }
        ContainerCmd::Update(a) => update(&conn, a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("kapsel: {e}");
            exit_on_err
        }
    }
}

pub fn group_main(conn: Result<Conn>, cmd: ContainerGroup) -> i32 {
    match cmd {
        ContainerGroup::Ls(a) => main(conn, ContainerCmd::Ps(a)),
        ContainerGroup::Cmd(c) => main(conn, c),
        ContainerGroup::Prune(a) => report(conn.and_then(|c| prune(&c, a.force).map(|_| ()))),
    }
}

pub fn system_main(conn: Result<Conn>, cmd: SystemGroup) -> i32 {
    match cmd {
        SystemGroup::Prune(a) => report(conn.and_then(|c| system_prune(&c, a))),
    }
}

fn report(r: Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kapsel: {e}");
            1
        }
    }
}

fn creq(conn: &Conn, c: &str) -> cpb::ContainerRequest {
    cpb::ContainerRequest {
        namespace: conn.namespace.clone(),
        container: c.to_string(),
        ..Default::default()
    }
}

fn stop_req(conn: &Conn, c: &str, timeout: Option<i32>) -> cpb::StopRequest {
    cpb::StopRequest {
        namespace: conn.namespace.clone(),
        container: c.to_string(),
        timeout: timeout.unwrap_or(-1),
        ..Default::default()
    }
}

/// Runs `f` on each container, printing its name on success and the error otherwise, as
/// Docker's multi-container verbs do; exit status 1 when any failed.
fn each(
    containers: &[String],
    f: impl Fn(&str) -> std::result::Result<(), kapsel_proto::ttrpc::Error>,
    conn: &Conn,
) -> Result<i32> {
    let mut failed = false;
    for c in containers {
        match f(c) {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("kapsel: {}", conn.err(e));
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

// ---- parsing of flag values

/// Docker's RAM sizes: a number with an optional b, k, m, g (binary units), case-insensitive.
pub fn parse_ram(flag: &str, s: &str) -> Result<i64> {
    let bad = || {
        Error::Usage(format!(
            "invalid {flag} {s:?}: use a size like 64m, 512k or 1g"
        ))
    };
    if s == "-1" {
        return Ok(-1);
    }
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|x| !x.is_empty() && x.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok((v * mult as f64) as i64)
}

fn parse_network(s: &str) -> Result<crate::containers::NetworkMode> {
    s.parse().map_err(
        |e: <crate::containers::NetworkMode as std::str::FromStr>::Err| Error::Usage(e.to_string()),
    )
}

fn parse_cpus(s: &str) -> Result<f64> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(Error::Usage(format!(
            "invalid argument {s:?} for \"--cpus\" flag: use a positive number of CPUs like 0.5 or 2"
        ))),
    }
}

/// `KEY=VALUE`, or `KEY` alone: taken from the client's environment (dropped when unset).
fn env_entry(e: &str) -> Option<String> {
    if e.contains('=') {
        Some(e.to_string())
    } else {
        std::env::var(e).ok().map(|v| format!("{e}={v}"))
    }
}

fn read_env_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("env file {}", path.display()),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(env_entry)
        .collect())
}

/// The options kapseld gets from the flags of `run`/`create`; `--entrypoint` is one string,
/// one argument (an empty string clears the entrypoint), as Docker takes it.
fn run_options(a: &RunArgs) -> Result<RunOptions> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| env_entry(e)));
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let Resources {
        memory,
        memory_swap,
        cpus,
    } = a.resources.parse()?;
    if let (Some(m), Some(s)) = (memory, memory_swap) {
        if s != -1 && s < m {
            return Err(Error::Usage(
                "minimum memoryswap limit should be larger than memory limit, see usage".into(),
            ));
        }
    }
    if memory_swap.is_some() && memory.is_none() {
        return Err(Error::Usage(
            "you should always set the memory limit when using the memoryswap limit, see usage"
                .into(),
        ));
    }
    Ok(RunOptions {
        name: a.name.clone().unwrap_or_default(),
        image: a.image().to_string(),
        cmd: (!a.command().is_empty()).then(|| a.command().to_vec()),
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        group_add: a.group_add.clone(),
        tty: a.tty,
        stdin_open: a.interactive,
        hostname: a.hostname.clone(),
        labels,
        memory,
        memory_swap,
        cpus,
        cpu_shares: a.resources.cpu_shares,
        cpuset_cpus: a.resources.cpuset_cpus.clone(),
        pids_limit: a.resources.pids_limit,
        read_only: a.read_only,
        tmpfs: a.tmpfs.clone(),
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        security_opt: a.security_opt.clone(),
        ulimits: a.ulimit.clone(),
        restart: a.restart.clone(),
        runtime: a.runtime.clone(),
        init: a.init,
        network: parse_network(&a.network)?,
        binds: a.volume.clone(),
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        auto_remove: a.rm,
        log_opts: a.log_opt.clone(),
    })
}

// ---- run, create, start, attach

/// The exit status Docker gives when the daemon could not start the container.
fn start_failure_code(e: &Error) -> i32 {
    match e {
        Error::Daemon { message, .. } => crate::containers::exit_code_for_start_error(message),
        _ => EXIT_KAPSEL,
    }
}

fn run(conn: &Conn, a: RunArgs, create_only: bool) -> Result<i32> {
    let mut opts = run_options(&a)?;
    // Attached: the client removes the container after it has read all its output (the
    // daemon removing it at exit could race the last log read); detached: the daemon does.
    let client_removes = a.rm && !a.detach && !create_only;
    if client_removes {
        opts.auto_remove = false;
    }
    let req = cpb::CreateRequest {
        namespace: conn.namespace.clone(),
        options: serde_json::to_vec(&opts).expect("run options serialise"),
        ..Default::default()
    };
    let created = conn
        .containers
        .create(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    if create_only {
        println!("{}", created.id);
        return Ok(0);
    }
    let id = created.id.clone();
    if let Err(e) = conn
        .containers
        .start(conn.ctx(), &creq(conn, &id))
        .map_err(|e| conn.err(e))
    {
        let code = start_failure_code(&e);
        eprintln!("kapsel: {e}");
        if a.rm {
            let _ = conn.containers.remove(
                conn.ctx(),
                &cpb::RemoveRequest {
                    namespace: conn.namespace.clone(),
                    container: id,
                    force: true,
                    // --rm takes the anonymous volumes along, as Docker's.
                    volumes: true,
                    ..Default::default()
                },
            );
        }
        return Ok(code);
    }
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    let code = attach_session(conn, &id, a.interactive, a.tty);
    if client_removes {
        let req = cpb::RemoveRequest {
            namespace: conn.namespace.clone(),
            container: id,
            force: true,
            volumes: true,
            ..Default::default()
        };
        if let Err(e) = conn.containers.remove(conn.ctx(), &req) {
            eprintln!("kapsel: removing the container: {}", conn.err(e));
        }
    }
    code
}

fn start(conn: &Conn, a: StartArgs) -> Result<i32> {
    if a.attach || a.interactive {
        let c = a.containers.first().cloned().unwrap_or_default();
        conn.containers
            .start(conn.ctx(), &creq(conn, &c))
            .map_err(|e| conn.err(e))?;
        let r = conn
            .containers
            .attach(conn.ctx(), &creq(conn, &c))
            .map_err(|e| conn.err(e))?;
        return attach_session(conn, &c, a.interactive, r.tty);
    }
    each(
        &a.containers,
        |c| {
            conn.containers
                .start(conn.ctx(), &creq(conn, c))
                .map(|_| ())
        },
        conn,
    )
}

fn attach(conn: &Conn, a: AttachArgs) -> Result<i32> {
    let r = conn
        .containers
        .attach(conn.ctx(), &creq(conn, &a.container))
        .map_err(|e| conn.err(e))?;
    attach_session_from(
        conn,
        &a.container,
        !a.no_stdin && !r.stdin.is_empty(),
        r.tty,
        0,
    )
}

/// Streams the container's output (from its log, following) and, with `stdin`, the
/// terminal's input into its stdin FIFO, until it exits; returns its exit status.
fn attach_session(conn: &Conn, container: &str, stdin: bool, tty: bool) -> Result<i32> {
    attach_session_from(conn, container, stdin, tty, -1)
}

/// [`attach_session`] showing the output from the `tail`-th last line (-1: all, 0: new only).
fn attach_session_from(
    conn: &Conn,
    container: &str,
    stdin: bool,
    tty: bool,
    tail: i64,
) -> Result<i32> {
    let _raw = terminal::Raw::enable(tty && stdin);
    let _resizer = tty.then(|| terminal::follow_size(conn, container, ""));
    // Where the output starts is fixed before any input reaches the container: what it
    // answers to that input is never before the cursor.
    let mut follow = LogFollow::new(container, true, tail, 0, 0, false);
    let mut done = follow.step(conn, 0)?;
    if stdin {
        let r = conn
            .containers
            .attach(conn.ctx(), &creq(conn, container))
            .map_err(|e| conn.err(e))?;
        if !r.stdin.is_empty() {
            let fifo = std::fs::OpenOptions::new()
                .write(true)
                .open(&r.stdin)
                .map_err(|source| Error::Io {
                    what: format!("open the stdin of {container} ({})", r.stdin),
                    source,
                })?;
            let addr = conn.address.clone();
            let ns = conn.namespace.clone();
            let c = container.to_string();
            std::thread::spawn(move || {
                pump_stdin(fifo, tty);
                // EOF: close the container's stdin (with -t, Docker leaves it to the pty).
                if !tty {
                    if let Ok(conn) = Conn::connect(&addr, &ns) {
                        let _ = conn.containers.close_stdin(
                            conn.ctx(),
                            &cpb::CloseStdinRequest {
                                namespace: ns.clone(),
                                container: c,
                                ..Default::default()
                            },
                        );
                    }
                }
            });
        }
    }
    while !done {
        done = follow.step(conn, LOG_WAIT_MS)?;
    }
    wait_exit(conn, container, "")
}

/// Copies our stdin into the FIFO until EOF. With a tty, Ctrl-P Ctrl-Q detaches: the
/// terminal is restored and the client exits 0, the container keeps running.
fn pump_stdin(mut fifo: std::fs::File, tty: bool) {
    let mut buf = [0u8; 8192];
    let mut input = std::io::stdin().lock();
    let mut ctrl_p = false;
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tty && terminal::detach_keys(&mut ctrl_p, &buf[..n]) {
                    terminal::restore();
                    eprint!("\r\n");
                    std::process::exit(0);
                }
                if fifo.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// How long one Logs call may wait for new lines.
const LOG_WAIT_MS: u32 = 5_000;

/// Prints log entries until the daemon says no more will come.
fn logs_loop(
    conn: &Conn,
    container: &str,
    follow: bool,
    tail: i64,
    since: i64,
    until: i64,
    timestamps: bool,
) -> Result<()> {
    let mut f = LogFollow::new(container, follow, tail, since, until, timestamps);
    while !f.step(conn, LOG_WAIT_MS)? {}
    Ok(())
}

/// A read of a container's log, one Logs call at a time, printing what each call returns.
struct LogFollow {
    req: cpb::LogsRequest,
    timestamps: bool,
}

impl LogFollow {
    fn new(
        container: &str,
        follow: bool,
        tail: i64,
        since: i64,
        until: i64,
        timestamps: bool,
    ) -> LogFollow {
        LogFollow {
            req: cpb::LogsRequest {
                container: container.to_string(),
                follow,
                tail,
                since,
                until,
                ..Default::default()
            },
            timestamps,
        }
    }

    /// One Logs call that waits up to `wait_ms` for lines; prints them; true when the daemon
    /// says no more will come.
    fn step(&mut self, conn: &Conn, wait_ms: u32) -> Result<bool> {
        let req = cpb::LogsRequest {
            namespace: conn.namespace.clone(),
            wait_ms,
            ..self.req.clone()
        };
        let r = conn
            .containers
            .logs(conn.ctx(), &req)
            .map_err(|e| conn.err(e))?;
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        for e in &r.entries {
            let w: &mut dyn Write = if e.stream == "stderr" {
                &mut err
            } else {
                &mut out
            };
            if self.timestamps {
                let _ = write!(w, "{} ", crate::logs::format_rfc3339_nanos(e.time));
            }
            let _ = w.write_all(&e.line);
        }
        let _ = out.flush();
        let _ = err.flush();
        self.req.cursor = r.cursor;
        Ok(r.done)
    }
}

/// Polls Wait until the process exits; returns its status.
fn wait_exit(conn: &Conn, container: &str, exec_id: &str) -> Result<i32> {
    loop {
        let req = cpb::WaitRequest {
            namespace: conn.namespace.clone(),
            container: container.to_string(),
            exec_id: exec_id.to_string(),
            wait_ms: 5_000,
            ..Default::default()
        };
        let r = conn
            .containers
            .wait(conn.ctx(), &req)
            .map_err(|e| conn.err(e))?;
        if r.exited {
            if !r.error.is_empty() {
                eprintln!("kapsel: {}", r.error);
            }
            return Ok(r.exit_code);
        }
    }
}

fn wait_cmd(conn: &Conn, a: Targets) -> Result<i32> {
    let mut failed = false;
    for c in &a.containers {
        match wait_exit(conn, c, "") {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("kapsel: {e}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

// ---- exec

fn exec(conn: &Conn, a: ExecArgs) -> Result<i32> {
    let req = cpb::ExecRequest {
        namespace: conn.namespace.clone(),
        container: a.container().to_string(),
        args: a.command().to_vec(),
        env: a.env.iter().filter_map(|e| env_entry(e)).collect(),
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        tty: a.tty,
        stdin: a.interactive && !a.detach,
        privileged: a.privileged,
        ..Default::default()
    };
    let r = conn
        .containers
        .exec(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?;
    // Open our ends before the process starts: reads never block the open, and nothing it
    // writes is lost.
    let open_read = |p: &str| -> Result<Option<std::fs::File>> {
        if p.is_empty() {
            return Ok(None);
        }
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p)
            .map(Some)
            .map_err(|source| Error::Io {
                what: format!("open {p}"),
                source,
            })
    };
    let stdout = if a.detach {
        None
    } else {
        open_read(&r.stdout)?
    };
    let stderr = if a.detach {
        None
    } else {
        open_read(&r.stderr)?
    };
    let stdin = if r.stdin.is_empty() {
        None
    } else {
        // Read-write so the open does not wait for the shim's reader.
        Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&r.stdin)
                .map_err(|source| Error::Io {
                    what: format!("open {}", r.stdin),
                    source,
                })?,
        )
    };
    let start = cpb::ExecStartRequest {
        namespace: conn.namespace.clone(),
        container: a.container().to_string(),
        exec_id: r.exec_id.clone(),
        ..Default::default()
    };
    if let Err(e) = conn.containers.exec_start(conn.ctx(), &start) {
        let e = conn.err(e);
        let code = start_failure_code(&e);
        eprintln!("kapsel: {e}");
        return Ok(if code == EXIT_KAPSEL { 126 } else { code });
    }
    if a.detach {
        return Ok(0);
    }
    let _raw = terminal::Raw::enable(a.tty && a.interactive);
    let _resizer = a
        .tty
        .then(|| terminal::follow_size(conn, a.container(), &r.exec_id));
    if let Some(fifo) = stdin {
        let tty = a.tty;
        std::thread::spawn(move || pump_stdin(fifo, tty));
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let copiers: Vec<_> = [(stdout, false), (stderr, true)]
        .into_iter()
        .filter_map(|(f, is_err)| f.map(|f| (f, is_err)))
        .map(|(f, is_err)| {
            let done = done.clone();
            std::thread::spawn(move || copy_fifo(f, is_err, &done))
        })
        .collect();
    let code = wait_exit(conn, a.container(), &r.exec_id);
    done.store(true, std::sync::atomic::Ordering::Release);
    for c in copiers {
        let _ = c.join();
    }
    code
}

/// Copies a FIFO opened non-blocking to our stdout/stderr until its writer (the shim) closes
/// it, or, once `done` is set (the process exited), until it is drained.
fn copy_fifo(mut f: std::fs::File, to_stderr: bool, done: &std::sync::atomic::AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;
    let mut buf = [0u8; 16384];
    let emit = |data: &[u8]| {
        if to_stderr {
            let _ = std::io::stderr().write_all(data);
        } else {
            let mut o = std::io::stdout();
            let _ = o.write_all(data);
            let _ = o.flush();
        }
    };
    loop {
        let finishing = done.load(Ordering::Acquire);
        let revents = {
            let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        };
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) || finishing {
            // Drain what is there (non-blocking): EOF or EAGAIN ends the drain.
            loop {
                match f.read(&mut buf) {
                    Ok(0) => {
                        // A writer came and went (POLLHUP), or the process is over.
                        if revents.contains(PollFlags::POLLHUP) || finishing {
                            return;
                        }
                        break;
                    }
                    Ok(n) => emit(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if finishing {
                            return;
                        }
                        break;
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

/// The client's terminal for `-it`: raw mode, window size, detach keys.
mod terminal {
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use nix::sys::termios::{self, SetArg, Termios};

    use super::{cpb, Conn};

    /// The terminal's mode before raw mode, restored at exit (also from the detach path).
    static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

    /// Raw mode on stdin while alive (when stdin is a terminal).
    pub struct Raw;

    impl Raw {
        pub fn enable(want: bool) -> Option<Raw> {
            use std::io::IsTerminal;
            if !want || !std::io::stdin().is_terminal() {
                return None;
            }
            let stdin = std::io::stdin();
            let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
            *SAVED.lock().expect("termios lock") = Some(saved);
            Some(Raw)
        }
    }

    impl Drop for Raw {
        fn drop(&mut self) {
            restore();
        }
    }

    pub fn restore() {
        if let Some(t) = SAVED.lock().expect("termios lock").take() {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &t);
        }
    }

    /// Docker's detach keys, Ctrl-P then Ctrl-Q, also across reads (`ctrl_p`: the last byte
    /// seen was Ctrl-P). The keys before them are still forwarded, as Docker does.
    pub fn detach_keys(ctrl_p: &mut bool, data: &[u8]) -> bool {
        for b in data {
            if *ctrl_p && *b == 0x11 {
                return true;
            }
            *ctrl_p = *b == 0x10;
        }
        false
    }

    /// The terminal's (columns, rows).
    fn size() -> Option<(u16, u16)> {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the valid, writable struct we pass.
        let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
        (r == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
    }

    /// Sends the window size now and whenever it changes, until dropped.
    pub struct Resizer(Arc<AtomicBool>);

    impl Drop for Resizer {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    pub fn follow_size(conn: &Conn, container: &str, exec_id: &str) -> Resizer {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, ns) = (conn.address.clone(), conn.namespace.clone());
        let (container, exec_id) = (container.to_string(), exec_id.to_string());
        let flag = stop.clone();
        std::thread::spawn(move || {
            let Ok(conn) = Conn::connect(&addr, &ns) else {
                return;
            };
            let mut last = None;
            while !flag.load(Ordering::Acquire) {
                if let Some((w, h)) = size().filter(|s| Some(*s) != last) {
                    let req = cpb::ResizePtyRequest {
                        namespace: ns.clone(),
                        container: container.clone(),
                        exec_id: exec_id.clone(),
                        width: u32::from(w),
                        height: u32::from(h),
                        ..Default::default()
                    };
                    if conn.containers.resize_pty(conn.ctx(), &req).is_ok() {
                        last = Some((w, h));
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Resizer(stop)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ctrl_p_ctrl_q_detaches_even_across_reads() {
            let mut p = false;
            assert!(!detach_keys(&mut p, b"ls\r"));
            assert!(detach_keys(&mut p, b"a\x10\x11"));
            let mut p = false;
            assert!(!detach_keys(&mut p, b"\x10"));
            assert!(detach_keys(&mut p, b"\x11"));
            let mut p = false;
            assert!(!detach_keys(&mut p, b"\x10x\x11"));
        }
    }
}

// ---- ps

fn truncate_cmd(cmd: &str, no_trunc: bool) -> String {
    let quoted = format!("\"{cmd}\"");
    if no_trunc || cmd.chars().count() <= 19 {
        return quoted;
    }
    let head: String = cmd.chars().take(19).collect();
    format!("\"{head}…\"")
}

fn created_ago(s: &cpb::ContainerSummary) -> String {
    let t = s
        .created_at
        .as_ref()
        .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
    format!("{} ago", human_duration(crate::metadata::now_nanos() - t))
}

fn ps(conn: &Conn, a: PsArgs) -> Result<()> {
    let req = cpb::ListRequest {
        namespace: conn.namespace.clone(),
        all: a.all || a.last.is_some() || a.latest,
        filters: a.filter.clone(),
        ..Default::default()
    };
    let mut list = conn
        .containers
        .list(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?
        .containers;
    if let Some(n) = a.last.or(a.latest.then_some(1)) {
        list.truncate(n);
    }
    let id_of = |s: &cpb::ContainerSummary| {
        if a.no_trunc {
            s.id.clone()
        } else {
            short_id(&s.id)
        }
    };
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for s in &list {
            let _ = writeln!(out, "{}", id_of(s));
        }
        return Ok(());
    }
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            for s in &list {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let v = serde_json::json!({
                    "Command": truncate_cmd(&s.command, a.no_trunc),
                    "CreatedAt": s.created_at.as_ref().map(|t| format_rfc3339(t.seconds * 1_000_000_000)).unwrap_or_default(),
                    "ID": id_of(s),
                    "Image": s.image,
                    "Labels": labels.join(","),
                    "LocalVolumes": "0",
                    "Mounts": "",
                    "Names": s.name,
                    "Networks": "",
                    "Ports": "",
                    "RunningFor": created_ago(s),
                    "Size": "0B",
                    "State": s.state,
                    "Status": s.status,
                });
                let _ = writeln!(out, "{v}");
            }
            return Ok(());
        }
        None | Some("table") => {}
        Some(other) => {
            return Err(Error::Usage(format!(
                "unsupported --format {other:?}: use table or json"
            )))
        }
    }
    let mut t = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for s in &list {
        t.row(vec![
            id_of(s),
            s.image.clone(),
            truncate_cmd(&s.command, a.no_trunc),
            created_ago(s),
            s.status.clone(),
            String::new(),
            s.name.clone(),
        ]);
    }
    let _ = out.write_all(t.render().as_bytes());
    Ok(())
}

// ---- logs

/// `--since`/`--until`: RFC 3339, Unix seconds, or a duration back from now (10s, 42m, 2h).
pub fn parse_time_arg(flag: &str, s: &str, now: i64) -> Result<i64> {
    crate::logs::parse_time(s, now).map_err(|e| Error::Usage(format!("invalid {flag} {s:?}: {e}")))
}

fn logs(conn: &Conn, a: LogsArgs) -> Result<()> {
    let now = crate::metadata::now_nanos();
    let tail = if a.tail == "all" {
        -1
    } else {
        a.tail.parse::<i64>().map_err(|_| {
            Error::Usage(format!("invalid --tail {:?}: use a number or all", a.tail))
        })?
    };
    let since = a
        .since
        .as_deref()
        .map(|s| parse_time_arg("--since", s, now))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|s| parse_time_arg("--until", s, now))
        .transpose()?;
    logs_loop(
        conn,
        &a.container,
        a.follow,
        tail,
        since.unwrap_or(0),
        until.unwrap_or(0),
        a.timestamps,
    )
}

// ---- stats, top, update, prune

/// One `docker stats` row from the daemon's JSON (cgroup figures).
fn stats_row(v: &serde_json::Value, no_trunc: bool) -> Vec<String> {
    let n = |p: &str| v.pointer(p).and_then(|x| x.as_u64()).unwrap_or(0);
    let mem = n("/memory/usage");
    let limit = n("/memory/limit");
    let pct = if limit > 0 && limit < u64::MAX / 2 {
        format!("{:.2}%", mem as f64 * 100.0 / limit as f64)
    } else {
        "0.00%".into()
    };
    let id = v["id"].as_str().unwrap_or("");
    vec![
        if no_trunc {
            id.to_string()
        } else {
            short_id(id)
        },
        v["name"].as_str().unwrap_or("").to_string(),
        v.pointer("/cpu/percent")
            .and_then(|x| x.as_f64())
            .map_or("--".into(), |p| format!("{p:.2}%")),
        format!(
            "{} / {}",
            super::table::human_bytes_binary(mem),
            if limit == 0 || limit >= u64::MAX / 2 {
                "unlimited".into()
            } else {
                super::table::human_bytes_binary(limit)
            }
        ),
        pct,
        "0B / 0B".into(),
        format!(
            "{} / {}",
            human_size(n("/blkio/read")),
            human_size(n("/blkio/write"))
        ),
        n("/pids/current").to_string(),
    ]
}

fn stats(conn: &Conn, a: StatsArgs) -> Result<()> {
    let targets: Vec<String> = if a.containers.is_empty() {
        conn.containers
            .list(
                conn.ctx(),
                &cpb::ListRequest {
                    namespace: conn.namespace.clone(),
                    all: a.all,
                    ..Default::default()
                },
            )
            .map_err(|e| conn.err(e))?
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect()
    } else {
        a.containers.clone()
    };
    loop {
        let mut rows = Vec::new();
        for c in &targets {
            let r = conn
                .containers
                .stats(conn.ctx(), &creq(conn, c))
                .map_err(|e| conn.err(e))?;
            let v: serde_json::Value = serde_json::from_str(&r.json).unwrap_or_default();
            rows.push(v);
        }
        let mut out = std::io::stdout().lock();
        if matches!(a.format.as_deref(), Some("json") | Some("{{json .}}")) {
            // Docker's keys, the table's cells as values.
            for (v, target) in rows.iter().zip(&targets) {
                let r = stats_row(v, a.no_trunc);
                let j = serde_json::json!({
                    "BlockIO": r[6], "CPUPerc": r[2], "Container": target, "ID": r[0],
                    "MemPerc": r[4], "MemUsage": r[3], "Name": r[1], "NetIO": r[5], "PIDs": r[7],
                });
                let _ = writeln!(out, "{j}");
            }
        } else {
            let mut t = Table::new(&[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ]);
            for v in &rows {
                t.row(stats_row(v, a.no_trunc));
            }
            if !a.no_stream {
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let _ = out.write_all(t.render().as_bytes());
        }
        let _ = out.flush();
        if a.no_stream {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn top(conn: &Conn, a: TopArgs) -> Result<()> {
    let r = conn
        .containers
        .top(
            conn.ctx(),
            &cpb::TopRequest {
                namespace: conn.namespace.clone(),
                container: a.container.clone(),
                ps_args: a.ps_args.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| conn.err(e))?;
    let titles: Vec<&str> = r.titles.iter().map(String::as_str).collect();
    let mut t = Table::new(&titles);
    for p in &r.processes {
        t.row(p.cells.clone());
    }
    print!("{}", t.render());
    Ok(())
}

fn update(conn: &Conn, a: UpdateArgs) -> Result<i32> {
    let mut u = serde_json::Map::new();
    let r = a.resources.parse()?;
    if let Some(m) = r.memory {
        u.insert("memory".into(), m.into());
    }
    if let Some(m) = r.memory_swap {
        u.insert("memory_swap".into(), m.into());
    }
    if let Some(c) = r.cpus {
        u.insert("cpus".into(), c.into());
    }
    if let Some(c) = a.resources.cpu_shares {
        u.insert("cpu_shares".into(), c.into());
    }
    if let Some(c) = &a.resources.cpuset_cpus {
        u.insert("cpuset_cpus".into(), c.clone().into());
    }
    if let Some(p) = a.resources.pids_limit {
        u.insert("pids_limit".into(), p.into());
    }
    if let Some(r) = &a.restart {
        u.insert("restart".into(), r.clone().into());
    }
    let body = serde_json::to_vec(&serde_json::Value::Object(u)).expect("json");
    each(
        &a.containers,
        |c| {
            let req = cpb::UpdateRequest {
                namespace: conn.namespace.clone(),
                container: c.to_string(),
                update: body.clone(),
                ..Default::default()
            };
            conn.containers.update(conn.ctx(), &req).map(|_| ())
        },
        conn,
    )
}

fn confirm(what: &str) -> bool {
    super::confirm(&format!("WARNING! This will remove:\n{what}"))
}

fn prune(conn: &Conn, force: bool) -> Result<bool> {
    if !force && !confirm("  - all stopped containers") {
        return Ok(false);
    }
    let r = conn
        .containers
        .prune(
            conn.ctx(),
            &cpb::PruneRequest {
                namespace: conn.namespace.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| conn.err(e))?;
    if !r.deleted.is_empty() {
        println!("Deleted Containers:");
        for d in &r.deleted {
            println!("{d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(r.space_reclaimed));
    Ok(true)
}

fn system_prune(conn: &Conn, a: SystemPruneArgs) -> Result<()> {
    let images = if a.all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    };
    let volumes = if a.volumes {
        "  - all anonymous volumes not used by at least one container\n"
    } else {
        ""
    };
    if !a.force && !confirm(&format!("  - all stopped containers\n{volumes}{images}")) {
        return Ok(());
    }
    prune(conn, true)?;
    if a.volumes {
        super::volumes::prune(conn, false, true)?;
    }
    let r = conn
        .images
        .prune(
            conn.ctx(),
            &kapsel_proto::images::PruneImagesRequest {
                namespace: conn.namespace.clone(),
                all: a.all,
                ..Default::default()
            },
        )
        .map_err(|e| conn.err(e))?;
    if !r.untagged.is_empty() || !r.deleted.is_empty() {
        println!("Deleted Images:");
        for u in &r.untagged {
            println!("untagged: {u}");
        }
        for d in &r.deleted {
            println!("deleted: {d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(r.reclaimed_bytes as u64)
    );
    Ok(())
}

/// `inspect` of containers: `None` when the reference names no container (the caller tries
/// images).
pub fn inspect_container(conn: &Conn, reference: &str) -> Result<Option<serde_json::Value>> {
    match conn.containers.inspect(conn.ctx(), &creq(conn, reference)) {
        Ok(r) => Ok(serde_json::from_str(&r.json).ok()),
        Err(e) => match conn.err(e) {
            Error::Daemon { code: 5, .. } => Ok(None),
            e => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes_parse_like_docker() {
        assert_eq!(parse_ram("-m", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_ram("-m", "64M").unwrap(), 64 << 20);
        assert_eq!(parse_ram("-m", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_ram("-m", "512k").unwrap(), 512 << 10);
        assert_eq!(parse_ram("-m", "512kb").unwrap(), 512 << 10);
        assert_eq!(parse_ram("-m", "1000").unwrap(), 1000);
        assert_eq!(parse_ram("-m", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_ram("--memory-swap", "-1").unwrap(), -1);
        let e = parse_ram("--memory", "lots").unwrap_err();
        assert!(e.to_string().contains("invalid --memory \"lots\""), "{e}");
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("x").is_err());
        assert_eq!(parse_cpus("1.5").unwrap(), 1.5);
    }

    #[test]
    fn commands_are_quoted_and_truncated_like_docker_ps() {
        assert_eq!(truncate_cmd("httpd -f", false), "\"httpd -f\"");
        assert_eq!(
            truncate_cmd("sh -c while true; do echo hi; done", false),
            "\"sh -c while true; d…\""
        );
        assert_eq!(
            truncate_cmd("sh -c while true; do", true),
            "\"sh -c while true; do\""
        );
    }

    #[test]
    fn times_parse_absolute_and_relative() {
        let now = 1_000_000_000_000_000_000;
        assert_eq!(
            parse_time_arg("--since", "10s", now).unwrap(),
            now - 10_000_000_000
        );
        assert!(parse_time_arg("--since", "2026-11-29T08:15:00Z", now).is_ok());
        let e = parse_time_arg("--since", "yesterday", now).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid --since \"yesterday\""),
            "{e}"
        );
    }

    /// The subcommand clap makes of a kapsel command line.
    fn parse(line: &[&str]) -> ContainerCmd {
        #[derive(clap::Parser, Debug)]
        struct T {
            #[command(subcommand)]
            cmd: ContainerCmd,
        }
        <T as clap::Parser>::try_parse_from(std::iter::once("kapsel").chain(line.iter().copied()))
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .cmd
    }

    fn run_args(line: &[&str]) -> RunArgs {
        match parse(line) {
            ContainerCmd::Run(a) | ContainerCmd::Create(a) => *a,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn run_flags_become_run_options() {
        let a = run_args(&[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "KAPSEL_TEST_UNSET_VAR",
            "--label",
            "k=v",
            "--label",
            "flag",
            "-m",
            "64m",
            "--cpus",
            "1.5",
            "--group-add",
            "audio",
            "--entrypoint",
            "",
            "busybox",
            "echo",
            "hi",
        ]);
        let o = run_options(&a).unwrap();
        assert_eq!(o.image, "busybox");
        assert_eq!(o.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        assert_eq!(o.env, vec!["A=1"]);
        assert_eq!(o.entrypoint, Some(vec![]));
        assert_eq!(o.memory, Some(64 << 20));
        assert_eq!(o.cpus, Some(1.5));
        assert_eq!(o.group_add, ["audio"]);
        assert_eq!(o.labels.get("flag").map(String::as_str), Some(""));
        assert!(o.auto_remove);
        let bad = run_args(&["create", "--memory-swap", "1g", "busybox"]);
        assert!(run_options(&bad)
            .unwrap_err()
            .to_string()
            .contains("memory limit"));
    }

    #[test]
    fn flags_after_the_image_or_container_belong_to_the_command() {
        let o = run_options(&run_args(&[
            "run", "-i", "busybox", "-c", "echo", "-m", "--rm", "-d",
        ]))
        .unwrap();
        assert_eq!(o.image, "busybox");
        assert_eq!(
            o.cmd.unwrap(),
            ["-c", "echo", "-m", "--rm", "-d"].map(String::from)
        );
        assert!(o.stdin_open && !o.auto_remove && o.memory.is_none());
        assert_eq!(
            run_options(&run_args(&["run", "busybox"])).unwrap().cmd,
            None
        );
        match parse(&["exec", "-e", "X=1", "web", "ls", "-d", "-e", "/"]) {
            ContainerCmd::Exec(a) => {
                assert_eq!(a.container(), "web");
                assert_eq!(a.command(), ["ls", "-d", "-e", "/"]);
                assert_eq!(a.env, ["X=1"]);
                assert!(!a.detach);
            }
            other => panic!("not exec: {other:?}"),
        }
    }
}
