//! `mkv snapshot -online URL -to DIR`: a consistent copy of a running master's index,
//! taken by the master itself (a RocksDB checkpoint), for backups. Restoring is starting a
//! master on the copy, then `mkv verify -deep -repair` to reconcile it with the volumes.

use std::path::Path;

use anyhow::{bail, Context as _};

use crate::{config::Config, verify::Master, volume::Client};

pub fn run(cfg: &Config, url: &str, to: &Path) -> anyhow::Result<()> {
    // the master resolves a relative path against its own folder, not the caller's
    let dir = std::path::absolute(to).with_context(|| format!("-to {}", to.display()))?;
    let Some(text) = dir.to_str() else { bail!("-to {}: the path must be text", dir.display()) };
    let master = Master::new(url, cfg.admin_token.as_deref())?;
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .context("cannot start the runtime")?;
    let (status, body) = rt.block_on(async {
        // the master's answer is a few lines: the kernel's buffer is right for it
        let client = Client::new(0);
        let target = format!("/?to={}", crate::verify::encode(text.as_bytes()));
        master.call(&client, "SNAPSHOT", &target).await
    })?;
    if status != 200 {
        bail!("the master refused the snapshot ({status}): {}", master.refusal(&body));
    }
    eprintln!("mkv: snapshot of the index of {} taken in {} (on the master's host)", master.addr, dir.display());
    eprintln!(
        "mkv: to restore it: stop the master, start it with -db {} (or a copy of it), then run \
         mkv verify -online http://<master> -deep -repair to reconcile it with the volumes",
        dir.display()
    );
    Ok(())
}
