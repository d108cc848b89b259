//! `list`: every container under `--root`, as runc's table, JSON, or ids only.

use super::{Global, Result};
use crate::container::list_states;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn run(g: &Global, format: Format, quiet: bool) -> Result<i32> {
    let states = list_states(&g.root)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if quiet {
        for s in &states {
            writeln!(out, "{}", s.id)?;
        }
        return Ok(0);
    }
    match format {
        Format::Json => {
            serde_json::to_writer(&mut out, &states)?;
            writeln!(out)?;
        }
        Format::Table => {
            let rows: Vec<[String; 6]> = states
                .into_iter()
                .map(|s| {
                    [
                        s.id,
                        s.pid.to_string(),
                        s.status.to_string(),
                        s.bundle.display().to_string(),
                        s.created,
                        s.owner,
                    ]
                })
                .collect();
            let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
            write_table(&mut out, &header, &rows)?;
        }
    }
    Ok(0)
}

/// Left-aligned columns separated by at least three spaces, like Go's tabwriter in runc.
pub fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[String; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = [0usize; N];
    for r in std::iter::once(header).chain(rows) {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    for r in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i] + 3));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}
