//! `kapsel`: the Docker-like command line of kapseld. Talks only to kapseld's ttrpc API
//! (except `login`, which checks the credentials against the registry itself and stores them
//! in the client's credential file, as `docker login` does).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use kapsel_proto::{images as ipb, system as spb, transfer as tpb};

pub mod client;
pub mod containers;
pub mod progress;
pub mod table;
pub mod volumes;

use client::{Conn, Error, Result};
use table::{human_bytes_binary, human_size, short_id, Table};

use crate::images::time::{format_rfc3339, human_duration};
use crate::registry::{auth, Reference};

#[derive(Parser, Debug)]
#[command(
    name = "kapsel",
    version,
    about = "Run containers and manage images with kapseld",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// kapseld's socket.
    #[arg(long, short = 'H', global = true, env = "KAPSEL_ADDRESS", default_value = crate::config::DEFAULT_ADDRESS)]
    address: String,
    /// The namespace of images.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "KAPSEL_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List images.
    Images(ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Save one or more images to a tar archive (streamed to stdout by default).
    Save(SaveArgs),
    /// Load images from a tar archive (docker-archive or OCI layout) or stdin.
    Load(LoadArgs),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// Display system-wide information.
    Info(FormatArgs),
    /// Show the kapsel version information.
    Version(FormatArgs),
    /// Print events from kapseld as they happen.
    Events(EventsArgs),
    #[command(flatten)]
    Containers(containers::ContainerCmd),
    /// Manage containers.
    #[command(subcommand)]
    Container(containers::ContainerGroup),
    /// Manage kapsel.
    #[command(subcommand)]
    System(containers::SystemGroup),
    /// Return low-level information on containers, images or volumes.
    Inspect(InspectArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCmd),
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images.
    Inspect(InspectArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Remove one or more images.
    Rm(RmiArgs),
    Tag(TagArgs),
    Pull(PullArgs),
    Push(PushArgs),
    Save(SaveArgs),
    Load(LoadArgs),
}

#[derive(clap::Args, Debug)]
struct ImagesArgs {
    /// Only images whose name contains this.
    repository: Option<String>,
    /// Show all images (kapsel keeps no intermediate images: the same as without).
    #[arg(short, long)]
    all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// `table` (default) or `json` (one object per line).
    #[arg(long)]
    format: Option<String>,
}

#[derive(clap::Args, Debug)]
struct RmiArgs {
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove every name of an image id.
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args, Debug)]
struct TagArgs {
    source: String,
    target: String,
}

#[derive(clap::Args, Debug)]
struct PullArgs {
    name: String,
    /// os/arch[/variant] to pick from a multi-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Suppress verbose output.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct PushArgs {
    name: String,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct SaveArgs {
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to a file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// `docker` (docker-archive, default) or `oci` (OCI image layout).
    #[arg(long, default_value = "docker")]
    format: String,
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// Read from a tar archive file instead of stdin.
    #[arg(short, long)]
    input: Option<PathBuf>,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct LoginArgs {
    /// Registry host (default docker.io).
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    #[arg(short, long)]
    password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(clap::Args, Debug)]
struct LogoutArgs {
    server: Option<String>,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct PruneArgs {
    /// Remove all images, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args, Debug)]
struct FormatArgs {
    /// `json` for machine-readable output.
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(clap::Args, Debug)]
struct EventsArgs {
    /// Topic prefixes to show (e.g. /images/).
    #[arg(long)]
    topic: Vec<String>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<usize>,
}

/// Runs the CLI; returns the exit status.
pub fn main() -> i32 {
    // Docker's CLI exits 125 on a flag it cannot parse (clap's default is 2).
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    let connect = || Conn::connect(&cli.address, &cli.namespace);
    match cli.cmd {
        Cmd::Containers(c) => return containers::main(connect(), c),
        Cmd::Container(c) => return containers::group_main(connect(), c),
        Cmd::System(c) => return containers::system_main(connect(), c),
        _ => {}
    }
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("kapsel: {e}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let connect = || Conn::connect(&cli.address, &cli.namespace);
    match cli.cmd {
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => images(&connect()?, a),
        Cmd::Image(ImageCmd::Inspect(a)) => inspect(&connect()?, a),
        Cmd::Image(ImageCmd::Prune(a)) => prune(&connect()?, a),
        Cmd::Rmi(a) | Cmd::Image(ImageCmd::Rm(a)) => rmi(&connect()?, a),
        Cmd::Tag(a) | Cmd::Image(ImageCmd::Tag(a)) => tag(&connect()?, a),
        Cmd::Pull(a) | Cmd::Image(ImageCmd::Pull(a)) => pull(&connect()?, a),
        Cmd::Push(a) | Cmd::Image(ImageCmd::Push(a)) => push(&connect()?, a),
        Cmd::Save(a) | Cmd::Image(ImageCmd::Save(a)) => save(&connect()?, a),
        Cmd::Load(a) | Cmd::Image(ImageCmd::Load(a)) => load(&connect()?, a),
        Cmd::Login(a) => login(&cli.address, &cli.namespace, a),
        Cmd::Logout(a) => logout(a),
        Cmd::Info(a) => info(&connect()?, a),
        Cmd::Version(a) => version(&cli.address, &cli.namespace, a),
        Cmd::Events(a) => events(&connect()?, a),
        Cmd::Inspect(a) => inspect_any(&connect()?, a),
        Cmd::Volume(c) => volumes::run(&connect()?, c),
        Cmd::Containers(_) | Cmd::Container(_) | Cmd::System(_) => {
            unreachable!("container commands are run by containers::main")
        }
    }
}

/// Prints `warning` and asks to go on: true on y or yes, or when stdin is not a terminal.
pub(crate) fn confirm(warning: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return true;
    }
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

fn now_nanos() -> i64 {
    crate::metadata::now_nanos()
}

/// (REPOSITORY, TAG, DIGEST) of a record name as `docker images` shows them.
fn split_name(name: &str, target_digest: &str) -> (String, String, String) {
    if crate::images::is_dangling_name(name) {
        return ("<none>".into(), "<none>".into(), target_digest.to_string());
    }
    match Reference::parse(name) {
        Ok(r) => {
            let mut repo = r.clone();
            repo.tag = None;
            repo.digest = None;
            (
                repo.familiar(),
                r.tag.clone().unwrap_or_else(|| "<none>".into()),
                target_digest.to_string(),
            )
        }
        Err(_) => (name.to_string(), "<none>".into(), target_digest.to_string()),
    }
}

fn images(conn: &Conn, a: ImagesArgs) -> Result<()> {
    let req = ipb::ListImagesRequest {
        namespace: conn.namespace.clone(),
        filter: a.repository.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut list = conn
        .images
        .list(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?
        .images;
    // Newest first, as docker does.
    list.sort_by_key(|s| {
        std::cmp::Reverse(
            s.config_created
                .as_ref()
                .map(|t| t.seconds)
                .unwrap_or(i64::MIN),
        )
    });
    let mut out = std::io::stdout().lock();
    let id_of = |s: &ipb::ImageSummary| {
        if s.config_digest.is_empty() {
            "<missing>".to_string()
        } else if a.no_trunc {
            s.config_digest.clone()
        } else {
            short_id(&s.config_digest)
        }
    };
    if a.quiet {
        let mut seen = Vec::new();
        for s in &list {
            let id = id_of(s);
            if !seen.contains(&id) {
                let _ = writeln!(out, "{id}");
                seen.push(id);
            }
        }
        return Ok(());
    }
    let created_since = |s: &ipb::ImageSummary| match s.config_created.as_ref() {
        Some(t) => format!(
            "{} ago",
            human_duration(now_nanos() - (t.seconds * 1_000_000_000 + i64::from(t.nanos)))
        ),
        None => "N/A".into(),
    };
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            for s in &list {
                let img = s.image.as_ref();
                let name = img.map(|i| i.name.as_str()).unwrap_or("");
                let target = img
                    .and_then(|i| i.target.as_ref())
                    .map(|t| t.digest.as_str())
                    .unwrap_or("");
                let (repo, tag, digest) = split_name(name, target);
                let v = serde_json::json!({
                    "Containers": "N/A",
                    "CreatedAt": s.config_created.as_ref().map(|t| format_rfc3339(t.seconds * 1_000_000_000)).unwrap_or_default(),
                    "CreatedSince": created_since(s),
                    "Digest": digest,
                    "ID": id_of(s),
                    "Repository": repo,
                    "SharedSize": "N/A",
                    "Size": human_size(s.size as u64),
                    "Tag": tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": human_size(s.size as u64),
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
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut t = Table::new(&header);
    for s in &list {
        let img = s.image.as_ref();
        let name = img.map(|i| i.name.as_str()).unwrap_or("");
        let target = img
            .and_then(|i| i.target.as_ref())
            .map(|t| t.digest.as_str())
            .unwrap_or("");
        let (repo, tag, digest) = split_name(name, target);
        let mut row = vec![repo, tag];
        if a.digests {
            row.push(digest);
        }
        row.push(id_of(s));
        row.push(created_since(s));
        row.push(human_size(s.size as u64));
        t.row(row);
    }
    let _ = out.write_all(t.render().as_bytes());
    Ok(())
}

fn inspect(conn: &Conn, a: InspectArgs) -> Result<()> {
    let mut all: Vec<serde_json::Value> = Vec::new();
    let mut first_err = None;
    for r in &a.images {
        let req = ipb::InspectImageRequest {
            namespace: conn.namespace.clone(),
            reference: r.clone(),
            ..Default::default()
        };
        match conn.images.inspect(conn.ctx(), &req) {
            Ok(resp) => {
                if let Ok(serde_json::Value::Array(v)) = serde_json::from_str(&resp.json) {
                    all.extend(v);
                }
            }
            Err(e) => {
                let e = conn.err(e);
                eprintln!("kapsel: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Array(all)).expect("json")
    );
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `kapsel inspect`: containers first, then images, as docker does.
fn inspect_any(conn: &Conn, a: InspectArgs) -> Result<()> {
    let mut all: Vec<serde_json::Value> = Vec::new();
    let mut first_err = None;
    for r in &a.images {
        match containers::inspect_container(conn, r) {
            Ok(Some(v)) => {
                all.push(v);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("kapsel: {e}");
                first_err.get_or_insert(e);
                continue;
            }
        }
        let req = ipb::InspectImageRequest {
            namespace: conn.namespace.clone(),
            reference: r.clone(),
            ..Default::default()
        };
        match conn.images.inspect(conn.ctx(), &req) {
            Ok(resp) => {
                if let Ok(serde_json::Value::Array(v)) = serde_json::from_str(&resp.json) {
                    all.extend(v);
                }
            }
            Err(_) => {
                let req = kapsel_proto::volumes::GetVolumeRequest {
                    namespace: conn.namespace.clone(),
                    name: r.clone(),
                    ..Default::default()
                };
                if let Ok(v) = conn.volumes.get(conn.ctx(), &req) {
                    all.push(volumes::inspect_json(&v));
                    continue;
                }
                let e = Error::Daemon {
                    code: 5,
                    message: format!("no such object: {r}"),
                };
                eprintln!("kapsel: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Array(all)).expect("json")
    );
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_deleted(untagged: &[String], deleted: &[String]) {
    for u in untagged {
        let shown = if crate::images::is_dangling_name(u) {
            u.clone()
        } else {
            Reference::parse(u)
                .map(|r| r.familiar())
                .unwrap_or(u.clone())
        };
        println!("Untagged: {shown}");
    }
    for d in deleted {
        println!("Deleted: {d}");
    }
}

fn rmi(conn: &Conn, a: RmiArgs) -> Result<()> {
    let mut first_err = None;
    for img in &a.images {
        let req = ipb::DeleteImageRequest {
            namespace: conn.namespace.clone(),
            reference: img.clone(),
            force: a.force,
            ..Default::default()
        };
        match conn.images.delete(conn.ctx(), &req) {
            Ok(r) => print_deleted(&r.untagged, &r.deleted),
            Err(e) => {
                let e = conn.err(e);
                eprintln!("kapsel: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        // Already printed for each image: exit 1 without repeating the last one.
        Some(_) => std::process::exit(1),
        None => Ok(()),
    }
}

fn prune(conn: &Conn, a: PruneArgs) -> Result<()> {
    if !a.force && std::io::stdin().is_terminal() {
        let what = if a.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        print!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let req = ipb::PruneImagesRequest {
        namespace: conn.namespace.clone(),
        all: a.all,
        ..Default::default()
    };
    let r = conn
        .images
        .prune(conn.ctx(), &req)
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

fn tag(conn: &Conn, a: TagArgs) -> Result<()> {
    let target = Reference::parse(&a.target)?;
    let got = conn
        .images
        .get(
            conn.ctx(),
            &ipb::GetImageRequest {
                namespace: conn.namespace.clone(),
                name: a.source.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| conn.err(e))?;
    let src = got
        .image
        .as_ref()
        .and_then(|s| s.image.as_ref())
        .ok_or_else(|| Error::Daemon {
            code: 5,
            message: format!("no such image: {}", a.source),
        })?;
    let req = ipb::CreateImageRequest {
        namespace: conn.namespace.clone(),
        image: Some(ipb::Image {
            name: target.to_string(),
            target: src.target.clone(),
            labels: src.labels.clone(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    conn.images
        .create(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?;
    Ok(())
}

fn auth_for(reference: &Reference) -> Result<Option<tpb::RegistryAuth>> {
    Ok(
        auth::lookup(&reference.registry)?.map(|c| tpb::RegistryAuth {
            username: c.username,
            password: c.password,
            ..Default::default()
        }),
    )
}

fn pull(conn: &Conn, a: PullArgs) -> Result<()> {
    let r = Reference::parse(&a.name)?;
    let req = tpb::PullRequest {
        namespace: conn.namespace.clone(),
        reference: r.to_string(),
        platform: a.platform.clone().unwrap_or_default(),
        auth: auth_for(&r)?.into(),
        ..Default::default()
    };
    let job = conn
        .transfer
        .pull(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?;
    let s = progress::follow(conn, &job.job, stdout_is_tty(), a.quiet, false)?;
    if let Some(name) = s.results.first() {
        println!("{name}");
    }
    Ok(())
}

fn push(conn: &Conn, a: PushArgs) -> Result<()> {
    let r = Reference::parse(&a.name)?;
    let req = tpb::PushRequest {
        namespace: conn.namespace.clone(),
        reference: r.to_string(),
        auth: auth_for(&r)?.into(),
        ..Default::default()
    };
    let job = conn
        .transfer
        .push(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?;
    let s = progress::follow(conn, &job.job, stdout_is_tty(), a.quiet, true)?;
    if a.quiet {
        if let Some(d) = s.results.first() {
            println!("{d}");
        }
    }
    Ok(())
}

/// A FIFO in a private temporary directory, removed on drop.
struct Fifo {
    dir: PathBuf,
    path: PathBuf,
}

impl Fifo {
    fn new() -> Result<Fifo> {
        let dir =
            std::env::temp_dir().join(format!("kapsel-{}-{}", std::process::id(), now_nanos()));
        std::fs::create_dir(&dir).map_err(|source| Error::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let path = dir.join("stream");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
            |e| Error::Io {
                what: format!("mkfifo {}", path.display()),
                source: e.into(),
            },
        )?;
        Ok(Fifo { dir, path })
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn absolute(p: &Path) -> Result<String> {
    std::path::absolute(p)
        .map(|p| p.display().to_string())
        .map_err(|source| Error::Io {
            what: p.display().to_string(),
            source,
        })
}

fn save(conn: &Conn, a: SaveArgs) -> Result<()> {
    let start = |path: String| -> Result<String> {
        let req = tpb::ExportRequest {
            namespace: conn.namespace.clone(),
            references: a.images.clone(),
            path,
            format: a.format.clone(),
            ..Default::default()
        };
        Ok(conn
            .transfer
            .export(conn.ctx(), &req)
            .map_err(|e| conn.err(e))?
            .job)
    };
    if let Some(out) = &a.output {
        let job = start(absolute(out)?)?;
        progress::follow(conn, &job, false, true, false)?;
        return Ok(());
    }
    if stdout_is_tty() {
        return Err(Error::Usage(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
        ));
    }
    let fifo = Fifo::new()?;
    let job = start(fifo.path.display().to_string())?;
    let path = fifo.path.clone();
    // The daemon opens the FIFO for writing; we copy what comes to stdout.
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut f = std::fs::File::open(&path)?;
        let mut out = std::io::stdout().lock();
        let n = std::io::copy(&mut f, &mut out)?;
        out.flush()?;
        Ok(n)
    });
    match progress::follow(conn, &job, false, true, false) {
        Ok(_) => {
            reader
                .join()
                .expect("save reader thread")
                .map_err(|source| Error::Io {
                    what: "writing the archive to stdout".into(),
                    source,
                })?;
            Ok(())
        }
        // The reader may still wait in open(): the process exit ends it.
        Err(e) => Err(e),
    }
}

fn load(conn: &Conn, a: LoadArgs) -> Result<()> {
    let start = |path: String| -> Result<String> {
        let req = tpb::ImportRequest {
            namespace: conn.namespace.clone(),
            path,
            ..Default::default()
        };
        Ok(conn
            .transfer
            .import(conn.ctx(), &req)
            .map_err(|e| conn.err(e))?
            .job)
    };
    let result = if let Some(input) = &a.input {
        let p = absolute(input)?;
        std::fs::metadata(&p).map_err(|source| Error::Io {
            what: format!("open {p}"),
            source,
        })?;
        let job = start(p)?;
        progress::follow(conn, &job, false, true, false)?
    } else {
        if std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "requested load from stdin, but stdin is empty (use -i FILE or redirect)".into(),
            ));
        }
        let fifo = Fifo::new()?;
        let fifo_name = fifo.path.display().to_string();
        let job = start(fifo_name.clone())?;
        let path = fifo.path.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = stdin.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                f.write_all(&buf[..n])?;
            }
        });
        // The daemon names the file it read: for the user that is stdin, not our FIFO.
        progress::follow(conn, &job, false, true, false).map_err(|e| match e {
            Error::Daemon { code, message } => Error::Daemon {
                code,
                message: message.replace(&fifo_name, "stdin"),
            },
            other => other,
        })?
    };
    if !a.quiet || result.messages.iter().any(|m| m.starts_with("Loaded")) {
        for m in &result.messages {
            println!("{m}");
        }
    }
    Ok(())
}

fn registry_host(server: Option<&str>) -> String {
    match server {
        None => "docker.io".into(),
        Some(s) => {
            let s = s
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let s = s.strip_suffix("/v1").or(s.strip_suffix("/v2")).unwrap_or(s);
            match s {
                "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
                other => other.to_string(),
            }
        }
    }
}

fn prompt(what: &str) -> Result<String> {
    print!("{what}: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|source| Error::Io {
            what: "reading stdin".into(),
            source,
        })?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn login(address: &str, namespace: &str, a: LoginArgs) -> Result<()> {
    let host = registry_host(a.server.as_deref());
    let username = match a.username {
        Some(u) => u,
        None => prompt("Username")?,
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| Error::Io {
                what: "reading the password from stdin".into(),
                source,
            })?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        prompt("Password")?
    };
    if username.is_empty() || password.is_empty() {
        return Err(Error::Usage("username and password are required".into()));
    }
    // The daemon's insecure registries and certificate directories decide how the registry is
    // reached and trusted, as for its pulls.
    let info = Conn::connect(address, namespace)
        .ok()
        .and_then(|c| c.system.info(c.ctx(), &spb::InfoRequest::default()).ok());
    let insecure = info
        .as_ref()
        .map(|i| i.insecure_registries.clone())
        .unwrap_or_default();
    let certs_dirs: Vec<std::path::PathBuf> = match info {
        Some(i) if !i.certs_dirs.is_empty() => i.certs_dirs.iter().map(Into::into).collect(),
        _ => crate::registry::tls::default_certs_dirs(),
    };
    let creds = auth::Credentials { username, password };
    crate::registry::login(&host, &creds, &insecure, &certs_dirs)?;
    let path = auth::ConfigFile::default_path()?;
    let mut f = auth::ConfigFile::load(&path)?;
    f.set(&host, &creds);
    f.save()?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    println!("Login Succeeded");
    Ok(())
}

fn logout(a: LogoutArgs) -> Result<()> {
    let host = registry_host(a.server.as_deref());
    let path = auth::ConfigFile::default_path()?;
    let mut f = auth::ConfigFile::load(&path)?;
    if f.remove(&host) {
        f.save()?;
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(())
}

fn version(address: &str, namespace: &str, a: FormatArgs) -> Result<()> {
    let arch = crate::registry::default_platform().architecture;
    let client = serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": kapsel_proto::API_VERSION,
        "Os": std::env::consts::OS,
        "Arch": arch,
    });
    let server = Conn::connect(address, namespace).and_then(|c| {
        c.system
            .version(c.ctx(), &spb::VersionRequest::default())
            .map_err(|e| c.err(e))
    });
    if a.format.as_deref() == Some("json") {
        let s = server.as_ref().ok().map(|v| {
            serde_json::json!({
                "Version": v.version, "ApiVersion": v.api_version, "Os": v.os,
                "Arch": v.arch, "KernelVersion": v.kernel, "Pid": v.pid,
            })
        });
        println!("{}", serde_json::json!({"Client": client, "Server": s}));
        return server.map(|_| ());
    }
    println!("Client:");
    println!(" Version:           {}", env!("CARGO_PKG_VERSION"));
    println!(" API version:       {}", kapsel_proto::API_VERSION);
    println!(" OS/Arch:           {}/{arch}", std::env::consts::OS);
    let v = server?;
    println!();
    println!("Server:");
    println!(" Kapseld:");
    println!("  Version:          {}", v.version);
    println!("  API version:      {}", v.api_version);
    println!("  OS/Arch:          {}/{}", v.os, v.arch);
    println!("  Kernel Version:   {}", v.kernel);
    println!("  Pid:              {}", v.pid);
    Ok(())
}

fn info(conn: &Conn, a: FormatArgs) -> Result<()> {
    let i = conn
        .system
        .info(conn.ctx(), &spb::InfoRequest::default())
        .map_err(|e| conn.err(e))?;
    if a.format.as_deref() == Some("json") {
        let v = serde_json::json!({
            "Images": i.images,
            "ServerVersion": i.version,
            "Driver": i.storage_driver,
            "DriverStatus": [
                ["Root Dir", i.snapshotter_root],
                ["Backing Filesystem", i.backing_filesystem],
                ["Snapshots", i.snapshots.to_string()],
                ["Usage", i.snapshot_usage_bytes.to_string()],
            ],
            "ContentStore": {"Root": i.content_root, "Blobs": i.content_blobs, "Size": i.content_bytes},
            "Metadata": {"Path": i.metadata_path, "SchemaVersion": i.schema_version},
            "KernelVersion": i.kernel,
            "OperatingSystem": i.os,
            "Architecture": i.arch,
            "NCPU": i.cpus,
            "MemTotal": i.memory_bytes,
            "KapselRootDir": i.root,
            "StateDir": i.state,
            "Address": i.address,
            "InsecureRegistries": i.insecure_registries,
            "CertsDirs": i.certs_dirs,
            "Namespaces": i.namespaces,
            "LogLevel": i.log_level,
        });
        println!("{v}");
        return Ok(());
    }
    let mut insecure = vec!["127.0.0.0/8".to_string(), "::1/128".to_string()];
    insecure.extend(i.insecure_registries.iter().cloned());
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!();
    println!("Server:");
    println!(" Images: {}", i.images);
    println!(" Server Version: {}", i.version);
    println!(" Storage Driver: {}", i.storage_driver);
    println!("  Root Dir: {}", i.snapshotter_root);
    println!("  Backing Filesystem: {}", i.backing_filesystem);
    println!("  Snapshots: {}", i.snapshots);
    println!(
        "  Usage: {} ({} inodes)",
        human_size(i.snapshot_usage_bytes as u64),
        i.snapshot_usage_inodes
    );
    println!(" Content Store:");
    println!("  Root Dir: {}", i.content_root);
    println!("  Blobs: {}", i.content_blobs);
    println!("  Size: {}", human_size(i.content_bytes as u64));
    println!(
        " Metadata: {} (schema {})",
        i.metadata_path, i.schema_version
    );
    println!(
        " Namespaces: {}",
        if i.namespaces.is_empty() {
            "default".to_string()
        } else {
            i.namespaces.join(", ")
        }
    );
    println!(" Kernel Version: {}", i.kernel);
    println!(" Operating System: {}", i.os);
    println!(" Architecture: {}", i.arch);
    println!(" CPUs: {}", i.cpus);
    println!(
        " Total Memory: {}",
        human_bytes_binary(i.memory_bytes as u64)
    );
    println!(" Kapsel Root Dir: {}", i.root);
    println!(" State Dir: {}", i.state);
    println!(" Address: {}", i.address);
    println!(" Log Level: {}", i.log_level);
    println!(" Insecure Registries:");
    for r in insecure {
        println!("  {r}");
    }
    println!(" Registry Certificates:");
    for d in &i.certs_dirs {
        println!("  {d}/<host:port>/");
    }
    Ok(())
}

fn events(conn: &Conn, a: EventsArgs) -> Result<()> {
    // Start from now: the current sequence, without waiting.
    let first = conn
        .events
        .subscribe(
            conn.ctx(),
            &kapsel_proto::events::SubscribeRequest::default(),
        )
        .map_err(|e| conn.err(e))?;
    let mut after = first.last_seq;
    let mut shown = 0usize;
    loop {
        let req = kapsel_proto::events::SubscribeRequest {
            after_seq: after,
            wait_ms: 10_000,
            topics: a.topic.clone(),
            ..Default::default()
        };
        let b = conn
            .events
            .subscribe(conn.ctx(), &req)
            .map_err(|e| conn.err(e))?;
        after = b.last_seq;
        for e in &b.events {
            let t = e
                .timestamp
                .as_ref()
                .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                .unwrap_or(0);
            println!(
                "{} {} {} {}",
                format_rfc3339(t),
                e.namespace,
                e.topic,
                e.event
            );
            shown += 1;
            if a.count.is_some_and(|c| shown >= c) {
                return Ok(());
            }
        }
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_docker_columns() {
        let d = "sha256:aaaa";
        assert_eq!(
            split_name("docker.io/library/busybox:latest", d),
            ("busybox".into(), "latest".into(), d.into())
        );
        assert_eq!(
            split_name("127.0.0.1:5000/app:1", d),
            ("127.0.0.1:5000/app".into(), "1".into(), d.into())
        );
        assert_eq!(
            split_name("docker.io/user/app@sha256:1111111111111111111111111111111111111111111111111111111111111111", d),
            ("user/app".into(), "<none>".into(), d.into())
        );
        assert_eq!(
            split_name("sha256:abc", d),
            ("<none>".into(), "<none>".into(), d.into())
        );
    }

    #[test]
    fn references_are_normalised_like_docker() {
        let n = |s: &str| Reference::parse(s).unwrap().to_string();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("user/app:2"), "docker.io/user/app:2");
        assert_eq!(n("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert!(Reference::parse("Busybox").is_err());
        assert!(Reference::parse("a b").is_err());
    }

    #[test]
    fn login_server_names_are_normalised() {
        assert_eq!(registry_host(None), "docker.io");
        assert_eq!(
            registry_host(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(registry_host(Some("127.0.0.1:5201")), "127.0.0.1:5201");
        assert_eq!(
            registry_host(Some("http://127.0.0.1:5201/")),
            "127.0.0.1:5201"
        );
    }

    #[test]
    fn cli_parses_docker_style_flags() {
        let c = Cli::try_parse_from(["kapsel", "images", "-q", "--digests"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Images(ImagesArgs {
                quiet: true,
                digests: true,
                ..
            })
        ));
        let c = Cli::try_parse_from(["kapsel", "rmi", "-f", "a", "b"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Rmi(RmiArgs { force: true, .. })));
        let c = Cli::try_parse_from(["kapsel", "save", "-o", "x.tar", "busybox"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Save(SaveArgs {
                output: Some(_),
                ..
            })
        ));
        assert!(Cli::try_parse_from(["kapsel", "rmi"]).is_err());
        let c = Cli::try_parse_from(["kapsel", "image", "prune", "-a", "-f"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Image(ImageCmd::Prune(PruneArgs {
                all: true,
                force: true
            }))
        ));
    }
}
