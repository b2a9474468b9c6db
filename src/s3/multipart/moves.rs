//! The parts of uploads in progress to where placement puts their upload's key now: what
//! a rebalance (offline, or the master's for `mkv rebalance -online`) does for them after
//! the keys, or Complete would find them on volumes that left the list.
//!
//! The order is a key's ([`crate::store::relocate`]): the record names old and new → copy
//! to the volumes that lack the part → the record names new and old → delete the old → the
//! record names the new. The part's lock is held throughout (no upload of the same part
//! number meanwhile), and its upload's while the record changes (Complete and Abort read
//! parts under it).

use std::time::Duration;

use super::{current_part, lock_name, numbered, part_key, parts_prefix, scan_all, upload_key, Part, Upload};
use crate::{
    placement::targets,
    store::{
        self,
        relocate::damaged_of,
        repair::{restore_file, FileValue},
        Ctx,
    },
};

/// How long a part's or its upload's lock is waited for (a part being uploaded, a
/// Complete running) before the part is reported busy and left for a rerun.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// What happened to one part.
#[derive(Debug, PartialEq, Eq)]
pub enum PartMove {
    /// On the volumes placement wants already.
    InPlace,
    Moved,
    /// `dry_run`: would move.
    WouldMove,
    /// Its upload ended (completed or aborted) while the part was looked at.
    Gone,
}

/// One part's name for a report: `<upload id>/<part number>`.
pub struct PartName<'a> {
    pub upload: &'a str,
    pub number: u32,
}

impl std::fmt::Display for PartName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3 upload {} part {}", self.upload, self.number)
    }
}

/// Moves every part of every upload in progress to its placement now; `each` hears how
/// each part went. Fails only when the index cannot be read.
pub async fn relocate_parts(
    ctx: &Ctx,
    dry_run: bool,
    mut each: impl FnMut(PartName<'_>, Result<PartMove, store::Error>),
) -> Result<(), store::Error> {
    // first the files of ended uploads that a volume down kept: volumes leaving the list
    // are still up now, and once they are gone nothing would reach them
    if !dry_run {
        super::sweep(ctx).await?;
    }
    for (k, v) in scan_all(ctx, b"u/")? {
        let Some(u) = Upload::decode(&v) else { continue };
        let Some(id) = k.strip_prefix(b"u/").and_then(|id| std::str::from_utf8(id).ok()) else { continue };
        let prefix = parts_prefix(id);
        for (number, _) in numbered(&prefix, scan_all(ctx, &prefix)?) {
            let r = relocate_part(ctx, id, number, &u.key, dry_run).await;
            each(PartName { upload: id, number }, r);
        }
    }
    Ok(())
}

/// Moves part `n` of upload `id` (into `key`) to `key`'s placement.
async fn relocate_part(ctx: &Ctx, id: &str, n: u32, key: &[u8], dry_run: bool) -> Result<PartMove, store::Error> {
    let _part = ctx.claim_within(&lock_name(id, Some(n)), LOCK_WAIT).await?;
    relocate_held(ctx, id, n, key, dry_run).await
}

/// [`relocate_part`] for a caller that holds the part's lock already (an upload of the part
/// that raced a volume change).
pub(super) async fn relocate_held(
    ctx: &Ctx,
    id: &str,
    n: u32,
    key: &[u8],
    dry_run: bool,
) -> Result<PartMove, store::Error> {
    let topo = ctx.topo();
    let want = topo.place(key);
    let Some(p) = current_part(ctx, id, n)? else { return Ok(PartMove::Gone) };
    if p.replicas == want {
        return Ok(PartMove::InPlace);
    }
    if dry_run {
        return Ok(PartMove::WouldMove);
    }
    let path = p.path();
    let missing: Vec<String> = want.iter().filter(|w| !p.replicas.contains(w)).cloned().collect();
    let copies = Part { replicas: missing.clone(), ..p.clone() };
    // going to fewer replicas, the ones that stay are read first, as a key's are
    // (store::relocate): one damaged beside a good one deleted would lose the part
    let extra: Vec<String> = p.replicas.iter().filter(|r| !want.contains(r)).cloned().collect();
    let damaged = if extra.len() > copies.replicas.len() {
        let rec = crate::record::Record {
            volumes: p.replicas.clone(),
            size: p.size,
            md5: Some(p.md5),
            mtime: p.mtime_ms,
            meta: Vec::new(),
        };
        damaged_of(ctx, &topo, &path, &rec, &want).await
    } else {
        Vec::new()
    };
    // the record names the copies before they are made (after the replicas it had, which
    // Complete reads first): a stop half way leaves no file that no record names, which no
    // rebalance, Complete or Abort would ever delete
    let named = Part { replicas: p.replicas.iter().chain(&missing).cloned().collect(), ..p.clone() };
    if !missing.is_empty() && !rerecord(ctx, id, n, &p, &named).await? {
        return Ok(PartMove::Gone);
    }
    if !copies.replicas.is_empty() || !damaged.is_empty() {
        // from a replica whose bytes are the part's (size and MD5) only: a damaged one copied
        // would leave the part unreadable once the old files go (one found damaged on the
        // way is copied again too)
        let value = FileValue { size: p.size, md5: p.md5, mtime_ms: p.mtime_ms };
        let from = p.replicas.iter().filter(|r| !damaged.contains(r)).cloned().collect();
        let to = copies.replicas.iter().chain(&damaged).cloned().collect();
        if let Err(e) = restore_file(ctx, &topo, &path, value, from, to).await {
            // the record stops naming the copies before they go: one naming a file that is
            // not there would have the next move copy nothing and delete the old replicas.
            // Should that fail (the upload busy), the copies stay where the record names them
            if missing.is_empty() || rerecord(ctx, id, n, &named, &p).await.is_ok() {
                super::delete_files(ctx, &topo, &copies).await;
            }
            return Err(e);
        }
    }
    // busy: the copies, whole now, stay where the record names them, for a rerun
    let _upload = ctx.claim_within(&lock_name(id, None), LOCK_WAIT).await?;
    // a Complete or an Abort while the part was copied ended the upload: its files went
    // with it, but for the copies
    if ctx.shared.index.mp_get(&upload_key(id))?.is_none() || current_part(ctx, id, n)?.as_ref() != Some(&named) {
        super::delete_files(ctx, &topo, &copies).await;
        return Ok(PartMove::Gone);
    }
    if !extra.is_empty() {
        // until the old files are gone the record names them, so a failure leaves no file
        // unnamed (and Complete reads the new ones first: they come first)
        let both = Part { replicas: want.iter().chain(&extra).cloned().collect(), ..p.clone() };
        ctx.shared.index.mp_put(&part_key(id, n), &both.encode())?;
        ctx.durable().await?;
        ctx.client.delete_all(&topo, &targets(&extra, &path)).await?;
    }
    ctx.shared.index.mp_put(&part_key(id, n), &Part { replicas: want, ..p }.encode())?;
    ctx.durable().await?;
    Ok(PartMove::Moved)
}

/// Rewrites part `n`'s record from `was` to `now` under its upload's lock (Complete and
/// Abort read parts under it); false when the upload ended or the record changed meanwhile.
async fn rerecord(ctx: &Ctx, id: &str, n: u32, was: &Part, now: &Part) -> Result<bool, store::Error> {
    let _upload = ctx.claim_within(&lock_name(id, None), LOCK_WAIT).await?;
    if ctx.shared.index.mp_get(&upload_key(id))?.is_none() || current_part(ctx, id, n)?.as_ref() != Some(was) {
        return Ok(false);
    }
    ctx.shared.index.mp_put(&part_key(id, n), &now.encode())?;
    ctx.durable().await?;
    Ok(true)
}
