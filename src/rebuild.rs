//! The index from what the volumes hold: their nginx JSON listings, walked in parallel.

use crate::config::Config;

pub struct Options {
    pub force: bool,
    pub verify: bool,
    pub concurrency: usize,
}

pub fn run(_cfg: Config, _opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("rebuild is not implemented yet")
}
