//! `create`: set the container up; its process waits for `start`.

use super::{check_systemd, Global, Result};
use crate::container::create::{create, CreateOpts, Mode};

pub fn run(g: &Global, opts: CreateOpts) -> Result<i32> {
    check_systemd(g)?;
    create(&opts, Mode::Create)?;
    Ok(0)
}
