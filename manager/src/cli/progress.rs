//! Following a transfer job: per-item bars and a total on a terminal (redrawn in place), one
//! plain line per status change otherwise.

use std::collections::HashMap;
use std::io::Write;

use kapsel_proto::transfer as pb;

use super::client::{Conn, Error, Result};
use super::table::{human_size, short_id};

/// How long one Progress call may wait for a change.
const POLL_MS: u32 = 5000;

fn word(status: &str, push: bool) -> &str {
    match status {
        "waiting" => "Waiting",
        "downloading" => "Downloading",
        "exists" | "already exists" if push => "Layer already exists",
        "exists" | "already exists" => "Already exists",
        "downloaded" => "Download complete",
        "extracting" => "Extracting",
        "pull complete" => "Pull complete",
        "pushing" => "Pushing",
        "pushed" => "Pushed",
        "mounted" => "Mounted from another repository",
        "loading" => "Loading",
        "exporting" => "Exporting",
        "done" => "Done",
        other => other,
    }
}

fn bar(offset: i64, total: i64) -> String {
    const W: usize = 50;
    if total <= 0 {
        return String::new();
    }
    let filled = ((offset.max(0) as f64 / total as f64) * W as f64).min(W as f64) as usize;
    let mut s = String::from("[");
    for i in 0..W {
        s.push(if i + 1 < filled {
            '='
        } else if i + 1 == filled {
            '>'
        } else {
            ' '
        });
    }
    s.push(']');
    s
}

fn item_line(it: &pb::ItemProgress, push: bool) -> String {
    let id = if it.id.starts_with("sha256:") {
        short_id(&it.id)
    } else {
        it.id.clone()
    };
    let w = word(&it.status, push);
    let moving = matches!(it.status.as_str(), "downloading" | "pushing" | "extracting");
    if moving && it.total > 0 {
        format!(
            "{id}: {w} {} {}/{}",
            bar(it.offset, it.total),
            human_size(it.offset.max(0) as u64),
            human_size(it.total as u64)
        )
    } else {
        format!("{id}: {w}")
    }
}

/// Follows `job` to its end; returns its last state, or the job's error.
pub fn follow(
    conn: &Conn,
    job: &str,
    tty: bool,
    quiet: bool,
    push: bool,
) -> Result<pb::ProgressResponse> {
    // Not locked across the loop: `save` streams the archive to stdout from another thread.
    let mut out = std::io::stdout();
    let mut after = 0u64;
    let mut printed_msgs = 0usize;
    let mut drawn = 0usize;
    let mut last_status: HashMap<String, String> = HashMap::new();
    loop {
        let req = pb::ProgressRequest {
            job: job.to_string(),
            after_version: after,
            wait_ms: POLL_MS,
            ..Default::default()
        };
        let s = conn
            .transfer
            .progress(conn.ctx(), &req)
            .map_err(|e| conn.err(e))?;
        after = s.version;
        // Only layers (and archive files) get lines, as in docker; documents are quick.
        let items: Vec<&pb::ItemProgress> = s
            .items
            .iter()
            .filter(|i| !matches!(i.kind.as_str(), "manifest" | "index" | "config"))
            .collect();
        if !quiet {
            let new_msgs = &s.messages[printed_msgs.min(s.messages.len())..];
            if tty {
                // Erase the block drawn last time.
                if drawn > 0 {
                    let _ = write!(out, "\x1b[{drawn}A");
                    for _ in 0..drawn {
                        let _ = writeln!(out, "\x1b[2K");
                    }
                    let _ = write!(out, "\x1b[{drawn}A");
                }
                if !s.done {
                    for m in new_msgs {
                        let _ = writeln!(out, "{m}");
                    }
                }
                drawn = 0;
                for it in &items {
                    let _ = writeln!(out, "\x1b[2K{}", item_line(it, push));
                    drawn += 1;
                }
                let total: i64 = items
                    .iter()
                    .filter(|i| i.kind == "layer")
                    .map(|i| i.total)
                    .sum();
                let done: i64 = items
                    .iter()
                    .filter(|i| i.kind == "layer")
                    .map(|i| i.offset.min(i.total))
                    .sum();
                if total > 0 && !s.done {
                    let _ = writeln!(
                        out,
                        "\x1b[2KTotal: {} {}/{}",
                        bar(done, total),
                        human_size(done as u64),
                        human_size(total as u64)
                    );
                    drawn += 1;
                }
                if s.done {
                    for m in new_msgs {
                        let _ = writeln!(out, "{m}");
                    }
                }
            } else {
                for m in new_msgs {
                    let _ = writeln!(out, "{m}");
                }
                for it in &items {
                    if last_status.get(&it.id) != Some(&it.status) {
                        last_status.insert(it.id.clone(), it.status.clone());
                        let _ = writeln!(out, "{}", item_line(it, push));
                    }
                }
            }
            printed_msgs = s.messages.len();
            let _ = out.flush();
        }
        if s.done {
            if !s.error.is_empty() {
                return Err(Error::Daemon {
                    code: s.error_code,
                    message: s.error.clone(),
                });
            }
            return Ok(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_docker_pull() {
        let it = pb::ItemProgress {
            id: "sha256:a72ef0ab1578aaaaaaaa".into(),
            status: "downloading".into(),
            offset: 500_000,
            total: 1_035_079,
            kind: "layer".into(),
            ..Default::default()
        };
        let l = item_line(&it, false);
        // 500000 of 1035079 bytes: 24 of 50 cells.
        assert_eq!(
            l,
            format!(
                "a72ef0ab1578: Downloading [{}>{}] 500kB/1.04MB",
                "=".repeat(23),
                " ".repeat(26)
            )
        );
        let done = pb::ItemProgress {
            status: "pull complete".into(),
            ..it.clone()
        };
        assert_eq!(item_line(&done, false), "a72ef0ab1578: Pull complete");
        let pushed = pb::ItemProgress {
            status: "exists".into(),
            ..it
        };
        assert_eq!(
            item_line(&pushed, true),
            "a72ef0ab1578: Layer already exists"
        );
    }
}
