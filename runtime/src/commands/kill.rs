//! `kill`: send a signal to the container's init, or with `--all` to all its processes.

use super::{parse_signal, Global, Result};
use crate::container::Container;

pub fn run(g: &Global, id: &str, signal: &str, all: bool) -> Result<i32> {
    let sig = parse_signal(signal)?;
    let c = Container::load(&g.root, id)?;
    c.signal(sig, all)?;
    Ok(0)
}
