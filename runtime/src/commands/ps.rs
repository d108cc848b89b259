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
        None if c.init_alive() => vec![c.state.init_pid],
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
