//! `ps`: the container's processes, as `ps` output filtered to them, or as a JSON list of pids.

use super::{Global, Result};
use crate::container::Container;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn run(g: &Global, id: &str, format: Format, ps_args: &[String]) -> Result<i32> {
    let c = Container::load(&g.root, id)?;
    let pids = match &c.state.cgroup {
        Some(cg) => cg.pids()?,
        None if c.init_alive() => pid_namespace_members(c.state.init_pid),
        None => vec![],
    };
    if format == Format::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| anyhow::anyhow!("running ps {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        anyhow::bail!(
            "ps {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| {
            anyhow::anyhow!("ps output has no PID column; pass ps args that print one")
        })?;
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    writeln!(w, "{header}")?;
    for line in lines {
        let pid: Option<i32> = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(w, "{line}")?;
        }
    }
    Ok(0)
}

/// Without a cgroup (rootless): the processes in the init's pid namespace — the init and what
/// `exec` started — when the container has a pid namespace of its own; just the init when it
/// shares the runtime's. Processes whose namespace this user may not read are left out.
fn pid_namespace_members(init: i32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let ns = |pid: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    let theirs = ns(&init.to_string());
    if theirs.is_none() || theirs == ns("self") {
        return vec![init];
    }
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| ns(&pid.to_string()) == theirs)
        .collect();
    pids.sort_unstable();
    pids
}
