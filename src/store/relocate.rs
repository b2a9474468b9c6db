//! One key's replicas to where placement wants them now (`REBALANCE /key`, the batch
//! rebalance, and a PUT that raced a volume change), keeping its state, size and MD5.
//!
//! The order is what makes it safe to interrupt anywhere: copy to the volumes that lack it
//! (streamed from a live replica) → the record lists new and old → delete the old → the
//! record lists the new. A rerun finds each key either done or with work left to redo.

use bytes::Bytes;

use super::{repair, Ctx, Error};
use crate::{
    index::State,
    placement::{key_path, replica_target, targets, MARKER_DIR},
    record::Record,
    volume::{self, Client, Topology},
};

/// Largest piece of a value held in memory while it is copied between volumes.
const COPY_CHUNK: usize = 256 << 10;

/// What happened to one key.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already where placement wants it, every replica there.
    InPlace,
    /// Where placement wants it, but these replicas were missing or damaged: copied again.
    Restored(Vec<String>),
    Moved,
    /// `dry_run`: would move from these replicas to those.
    WouldMove(Vec<String>, Vec<String>),
}

/// Moves one key's replicas to where placement wants them now.
pub async fn one(ctx: &Ctx, key: &[u8], dry_run: bool) -> Result<Outcome, Error> {
    let sh = &ctx.shared;
    let _claim = ctx.claim(key)?;
    let (state, rec) = sh.index.get(key)?.ok_or(Error::NotFound)?;
    let topo = ctx.topo();
    let want = topo.place(key);
    if rec.volumes == want {
        if dry_run {
            return Ok(Outcome::InPlace);
        }
        // in place by the record; the files are asked too, and what is missing restored
        let r = repair::restore(ctx, &topo, key, state, &rec, &[], false).await?;
        return Ok(if r.restored.is_empty() { Outcome::InPlace } else { Outcome::Restored(r.restored) });
    }
    if dry_run {
        return Ok(Outcome::WouldMove(rec.volumes, want));
    }
    let path = key_path(key);
    let marker = format!("{MARKER_DIR}{path}");
    let missing: Vec<String> = want.iter().filter(|w| !rec.volumes.contains(w)).cloned().collect();
    if !missing.is_empty() {
        let src = rec.volumes.iter().find(|v| topo.is_up(v)).ok_or(Error::NoLiveReplica)?;
        copy(&ctx.client, &topo, src, &path, &targets(&missing, &path)).await?;
        if state == State::Unlinked {
            ctx.client.put_all(&topo, &targets(&missing, &marker), Bytes::from_static(b"unlinked\n")).await?;
        }
    }
    let extra: Vec<String> = rec.volumes.iter().filter(|v| !want.contains(v)).cloned().collect();
    if !extra.is_empty() {
        // until the old replicas are gone the record names them, so a failure leaves no
        // unlisted file; new ones first, so GETs go there
        let both = Record { volumes: want.iter().chain(&extra).cloned().collect(), ..rec.clone() };
        sh.index.set(key, state, &both)?;
        let mut gone = targets(&extra, &path);
        if state == State::Unlinked {
            gone.extend(targets(&extra, &marker));
        }
        ctx.client.delete_all(&topo, &gone).await?;
    }
    sh.index.set(key, state, &Record { volumes: want, ..rec })?;
    ctx.durable().await?;
    Ok(Outcome::Moved)
}

/// Streams the file at `path` of replica `src` to every `(server, path)` of `to`.
pub async fn copy(
    client: &Client,
    topo: &Topology,
    src: &str,
    path: &str,
    to: &[(String, String)],
) -> Result<(), Error> {
    let (server, spath) = replica_target(src, path);
    let mut d = client.download(topo, &server, &spath).await?;
    if d.status != 200 {
        return Err(volume::Error::Status(server, d.status).into());
    }
    let Some(len) = d.length else {
        return Err(volume::Error::Protocol(server, "no Content-Length on a stored value").into());
    };
    let mut up = client.upload(topo, to, Some(len)).await?;
    while let Some(chunk) = client.next_chunk(&mut d, COPY_CHUNK).await? {
        client.upload_chunk(&mut up, chunk).await?;
    }
    client.finish(d);
    client.upload_finish(up).await?;
    Ok(())
}
