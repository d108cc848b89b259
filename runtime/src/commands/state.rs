//! `state`: the runtime-spec state JSON of one container.

use super::{Global, Result};
use crate::container::Container;

pub fn run(g: &Global, id: &str) -> Result<i32> {
    let c = Container::load(&g.root, id)?;
    println!("{}", serde_json::to_string_pretty(&c.oci_state())?);
    Ok(0)
}
