//! `delete`: remove a stopped (or, with `-f`, any) container and everything it left on the host.

use super::{Global, Result};
use crate::container::{Container, ContainerError, Status};
use std::time::Duration;

pub fn run(g: &Global, id: &str, force: bool) -> Result<i32> {
    let c = match Container::load(&g.root, id) {
        Ok(c) => c,
        // As runc: deleting a container that is already gone is fine with -f. A directory
        // without state.json (a runtime killed right after making it) goes too.
        Err(ContainerError::NotFound(_)) if force => {
            let dir = g.root.join(id);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    anyhow::bail!("remove {}: {e}", dir.display())
                }
                _ => return Ok(0),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let status = c.status();
    match status {
        Status::Stopped => {}
        Status::Created => kill_and_wait(&c)?,
        _ if force => kill_and_wait(&c)?,
        _ => {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                op: "delete it",
                hint: " (stop it first or use delete --force)",
            }
            .into())
        }
    }
    c.destroy()?;
    Ok(0)
}

fn kill_and_wait(c: &Container) -> Result<()> {
    c.signal(libc::SIGKILL, c.state.cgroup.is_some())?;
    if !c.wait_stopped(Duration::from_secs(10)) {
        anyhow::bail!(
            "container {:?} did not stop within 10s after SIGKILL (pid {})",
            c.id(),
            c.state.init_pid
        );
    }
    Ok(())
}
