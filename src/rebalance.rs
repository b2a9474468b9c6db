//! Replicas to their placement: for one key on the running server, or for all keys offline.

use crate::server::{ApiError, Ctx};

/// Moves one key's replicas to where placement wants them (`REBALANCE /key`).
pub async fn one(_ctx: &Ctx, _key: &[u8]) -> Result<(), ApiError> {
    Err(ApiError::MethodNotAllowed)
}

pub struct Options {
    pub dry_run: bool,
    pub online: Option<String>,
    pub concurrency: usize,
}

pub fn run(_cfg: crate::config::Config, _opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("rebalance is not implemented yet")
}
