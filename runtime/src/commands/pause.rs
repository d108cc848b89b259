//! `pause` and `resume`: freeze and thaw the container's cgroup.

use super::{Global, Result};
use crate::container::{Container, ContainerError, Status};

pub fn pause(g: &Global, id: &str) -> Result<i32> {
    let c = Container::load(&g.root, id)?;
    let status = c.status();
    if status != Status::Running && status != Status::Created {
        return Err(ContainerError::WrongState {
            id: id.into(),
            status,
            op: "pause it",
            hint: "",
        }
        .into());
    }
    cgroup(&c)?.freeze()?;
    Ok(0)
}

pub fn resume(g: &Global, id: &str) -> Result<i32> {
    let c = Container::load(&g.root, id)?;
    let status = c.status();
    if status != Status::Paused {
        return Err(ContainerError::WrongState {
            id: id.into(),
            status,
            op: "resume it",
            hint: " (it is not paused)",
        }
        .into());
    }
    cgroup(&c)?.thaw()?;
    Ok(0)
}

fn cgroup(c: &Container) -> Result<&crate::cgroups::Cgroup> {
    c.state.cgroup.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "container {:?} has no cgroup of its own (rootless), so it cannot be frozen",
            c.id()
        )
    })
}
