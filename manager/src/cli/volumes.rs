//! `kapsel volume create | ls | inspect | rm | prune`, as Docker's.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use kapsel_proto::volumes as vpb;

use super::client::{Conn, Error, Result};
use super::table::human_size;
use crate::images::time::format_rfc3339;

/// `kapsel volume ...`
#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes. You cannot remove a volume that is in use by a container.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes (anonymous ones only, unless -a).
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Set metadata for a volume (KEY=VALUE).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Specify volume driver name (only "local").
    #[arg(short, long, default_value = "local")]
    driver: String,
    /// The volume's name; without one, an anonymous volume with a random name.
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    quiet: bool,
    /// Filter output based on conditions provided (dangling=true, name=TEXT, label=KEY[=VALUE]).
    #[arg(short, long = "filter")]
    filters: Vec<String>,
    /// `table` (default) or `json`.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Do not fail on volumes that do not exist (volumes in use are still refused).
    #[arg(short, long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

pub fn run(conn: &Conn, cmd: VolumeCmd) -> Result<()> {
    match cmd {
        VolumeCmd::Create(a) => create(conn, a),
        VolumeCmd::Ls(a) => ls(conn, a),
        VolumeCmd::Inspect(a) => inspect(conn, a),
        VolumeCmd::Rm(a) => rm(conn, a),
        VolumeCmd::Prune(a) => {
            prune(conn, a.all, a.force)?;
            Ok(())
        }
    }
}

fn create(conn: &Conn, a: CreateArgs) -> Result<()> {
    if a.driver != crate::volumes::DRIVER {
        return Err(Error::Usage(format!(
            "volume driver {:?} is not available: kapsel has only \"local\"",
            a.driver
        )));
    }
    let mut labels = std::collections::HashMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let req = vpb::CreateVolumeRequest {
        namespace: conn.namespace.clone(),
        name: a.name.unwrap_or_default(),
        labels,
        ..Default::default()
    };
    let v = conn
        .volumes
        .create(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?;
    println!("{}", v.name);
    Ok(())
}

fn list(conn: &Conn, filters: Vec<String>) -> Result<Vec<vpb::Volume>> {
    let req = vpb::ListVolumesRequest {
        namespace: conn.namespace.clone(),
        filters,
        ..Default::default()
    };
    let mut vols = conn
        .volumes
        .list(conn.ctx(), &req)
        .map_err(|e| conn.err(e))?
        .volumes;
    vols.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(vols)
}

/// Docker's `Labels` column: `k=v,k2=v2`, sorted.
fn labels_text(v: &vpb::Volume) -> String {
    let sorted: BTreeMap<_, _> = v.labels.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ls(conn: &Conn, a: LsArgs) -> Result<()> {
    let vols = list(conn, a.filters)?;
    if a.quiet {
        for v in &vols {
            println!("{}", v.name);
        }
        return Ok(());
    }
    match a.format.as_deref() {
        None | Some("table") => {
            // Docker's tabwriter makes a column at least 10 wide.
            println!("{:<10}VOLUME NAME", "DRIVER");
            for v in &vols {
                println!("{:<10}{}", v.driver, v.name);
            }
        }
        Some("json") | Some("{{json .}}") => {
            for v in &vols {
                let j = serde_json::json!({
                    "Availability": "N/A",
                    "Driver": v.driver,
                    "Group": "N/A",
                    "Labels": labels_text(v),
                    "Links": "N/A",
                    "Mountpoint": v.mountpoint,
                    "Name": v.name,
                    "Scope": "local",
                    "Size": "N/A",
                    "Status": "N/A",
                });
                println!("{j}");
            }
        }
        Some(other) => {
            return Err(Error::Usage(format!(
                "unsupported --format {other:?}: use table or json"
            )))
        }
    }
    Ok(())
}

/// `docker volume inspect`'s object.
pub fn inspect_json(v: &vpb::Volume) -> serde_json::Value {
    let created = v
        .created_at
        .as_ref()
        .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
    // Docker shows `null` for a volume without labels, and for the local driver's options.
    let labels: Option<BTreeMap<_, _>> = (!v.labels.is_empty()).then(|| v.labels.iter().collect());
    serde_json::json!({
        "CreatedAt": format_rfc3339(created),
        "Driver": v.driver,
        "Labels": labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": null,
        "Scope": "local",
    })
}

fn inspect(conn: &Conn, a: InspectArgs) -> Result<()> {
    let mut all = Vec::new();
    let mut failed = false;
    for name in &a.names {
        let req = vpb::GetVolumeRequest {
            namespace: conn.namespace.clone(),
            name: name.clone(),
            ..Default::default()
        };
        match conn.volumes.get(conn.ctx(), &req) {
            Ok(v) => all.push(inspect_json(&v)),
            Err(e) => {
                eprintln!("kapsel: {}", conn.err(e));
                failed = true;
            }
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Array(all)).expect("json")
    );
    if failed {
        // Each error is printed already.
        std::process::exit(1);
    }
    Ok(())
}

fn rm(conn: &Conn, a: RmArgs) -> Result<()> {
    let mut failed = false;
    for name in &a.names {
        let req = vpb::RemoveVolumeRequest {
            namespace: conn.namespace.clone(),
            name: name.clone(),
            ..Default::default()
        };
        match conn
            .volumes
            .remove(conn.ctx(), &req)
            .map_err(|e| conn.err(e))
        {
            Ok(_) => println!("{name}"),
            Err(Error::Daemon { code: 5, .. }) if a.force => {}
            Err(e) => {
                eprintln!("kapsel: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// `volume prune` (and the volume part of `system prune --volumes`); false when the user
/// declined.
pub fn prune(conn: &Conn, all: bool, force: bool) -> Result<bool> {
    let which = if all { "all" } else { "anonymous" };
    if !force
        && !super::confirm(&format!(
            "WARNING! This will remove {which} local volumes not used by at least one container."
        ))
    {
        return Ok(false);
    }
    let r = conn
        .volumes
        .prune(
            conn.ctx(),
            &vpb::PruneVolumesRequest {
                namespace: conn.namespace.clone(),
                all,
                ..Default::default()
            },
        )
        .map_err(|e| conn.err(e))?;
    if !r.deleted.is_empty() {
        println!("Deleted Volumes:");
        for d in &r.deleted {
            println!("{d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(r.space_reclaimed));
    Ok(true)
}
