//! `events`: container stats (and OOM notices) as JSON lines, like `runc events`.

use super::{Global, Result};
use crate::container::{Container, ContainerError, Status};
use std::io::Write;
use std::time::{Duration, Instant};

pub fn run(g: &Global, id: &str, stats_once: bool, interval: Duration) -> Result<i32> {
    let c = Container::load(&g.root, id)?;
    let status = c.status();
    if status == Status::Stopped {
        return Err(ContainerError::WrongState {
            id: id.into(),
            status,
            op: "report events",
            hint: "",
        }
        .into());
    }
    let cg =
        c.state.cgroup.as_ref().ok_or_else(|| {
            anyhow::anyhow!("container {id:?} has no cgroup of its own: no stats")
        })?;
    let emit = |typ: &str, data: Option<serde_json::Value>| -> Result<()> {
        let mut v = serde_json::json!({"type": typ, "id": id});
        if let Some(d) = data {
            v["data"] = d;
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}")?;
        out.flush()?;
        Ok(())
    };
    if stats_once {
        emit("stats", Some(serde_json::to_value(cg.stats()?)?))?;
        return Ok(0);
    }
    let mut ooms = cg.oom_kills();
    let mut next = Instant::now();
    while c.init_alive() {
        if Instant::now() >= next {
            emit("stats", Some(serde_json::to_value(cg.stats()?)?))?;
            next = Instant::now() + interval;
        }
        let now = cg.oom_kills();
        if now > ooms {
            emit("oom", None)?;
            ooms = now;
        }
        std::thread::sleep(Duration::from_millis(100).min(interval));
    }
    Ok(0)
}
