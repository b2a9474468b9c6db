//! One key's replicas to where placement wants them now (`REBALANCE /key`, the batch
//! rebalance, and a PUT that raced a volume change), keeping its state, size and MD5.
//!
//! The order is what makes it safe to interrupt anywhere: copy to the volumes that lack it
//! (from a replica whose bytes verify) → the record lists new and old → delete the old → the
//! record lists the new. A rerun finds each key either done or with work left to redo.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{
    future::join_all,
    stream::{FuturesUnordered, StreamExt},
};

use super::{repair, Ctx, Error};
use crate::{
    index::State,
    placement::{key_path, replica_target, targets, MARKER_BODY, MARKER_DIR},
    record::Record,
    volume::{self, Topology},
};

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
    /// A PUT or DELETE that failed half way (its record a placeholder): its files deleted.
    Deleted,
    /// `dry_run`: would be [`Outcome::Deleted`].
    WouldDelete,
}

impl Outcome {
    /// How a `REBALANCE` answer names it (its `Key-Rebalance` header).
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::InPlace => IN_PLACE,
            Outcome::Restored(_) => RESTORED,
            Outcome::Moved => MOVED,
            Outcome::WouldMove(..) => "would-move",
            Outcome::Deleted => DELETED,
            Outcome::WouldDelete => "would-delete",
        }
    }
}

/// The words of [`Outcome::word`] that a rebalance through the master reads back.
pub const IN_PLACE: &str = "in-place";
pub const RESTORED: &str = "restored";
pub const MOVED: &str = "moved";
pub const DELETED: &str = "deleted";

/// Moves one key's replicas to where placement wants them now.
pub async fn one(ctx: &Ctx, key: &[u8], dry_run: bool) -> Result<Outcome, Error> {
    let sh = &ctx.shared;
    let claim = ctx.claim(key)?;
    // the record a replacement left pending would replace names where it was written
    if !dry_run {
        super::write::settle_pending(ctx, &claim, key).await?;
    }
    let (state, rec) = sh.index.get(key)?.ok_or(Error::NotFound)?;
    if state.holds_unfinished(&rec) {
        // a PUT or DELETE that failed half way (one in flight holds the claim): no value to
        // move, and left where it is it could name volumes leaving the list; the delete is
        // finished instead, as a DELETE of it would
        if dry_run {
            return Ok(Outcome::WouldDelete);
        }
        super::remove::delete_claimed(ctx, claim, key, false).await?;
        return Ok(Outcome::Deleted);
    }
    let topo = ctx.topo();
    let want = topo.place(key);
    if rec.volumes == want {
        if dry_run {
            return Ok(Outcome::InPlace);
        }
        // in place by the record; the files are asked too, and what is missing restored
        let r = repair::restore(ctx, &topo, key, state, &rec, &[], false, &[]).await?;
        if let Some(r) = r.skipped.first() {
            // a replica on a volume that is down was not asked: not known to be in place
            return Err(volume::Error::Down(crate::placement::server_of(r).to_string()).into());
        }
        return Ok(if r.restored.is_empty() { Outcome::InPlace } else { Outcome::Restored(r.restored) });
    }
    if dry_run {
        return Ok(Outcome::WouldMove(rec.volumes, want));
    }
    let path = key_path(key);
    let mut to: Vec<String> = want.iter().filter(|w| !rec.volumes.contains(w)).cloned().collect();
    let extra: Vec<String> = rec.volumes.iter().filter(|v| !want.contains(v)).cloned().collect();
    // a move that deletes more replicas than it writes (fewer -replicas) reads the ones that
    // stay, and one that is not the value is copied again: else deleting a good old one
    // beside it would leave fewer good copies than it found. (Otherwise each one deleted
    // is replaced by a copy that verifies, so none is lost; not reading saves two reads a
    // key in a rebalance onto more volumes.)
    let damaged = if extra.len() > to.len() { damaged_of(ctx, &topo, &path, &rec, &want).await } else { Vec::new() };
    to.extend(damaged.iter().cloned());
    if !to.is_empty() {
        // the record names the copies before they are made, after the replicas it has (reads
        // go to those): a move killed half way leaves no file that no record names. Copies
        // made first were left on a volume the next volume list dropped, for good, and a
        // rebuild that counted that volume brought them back, deleted keys too (a helper's
        // kill -9 of an online rebalance). Only where reads do not reach them: GETs take
        // turns over the first -replicas named, so a record with fewer (a move to more
        // replicas) had GETs sent to a copy not made yet; its copies are recorded once made
        let new = to.iter().filter(|t| !rec.volumes.contains(t));
        let ahead = Record { volumes: rec.volumes.iter().chain(new).cloned().collect(), ..rec.clone() };
        if ahead.volumes != rec.volumes && rec.volumes.len() >= topo.replicas {
            sh.index.set_from(key, Some(state), state, &ahead)?;
        }
        // from a replica whose bytes are the record's only: one copied damaged would spread,
        // and the old replicas it replaces are deleted below
        let from = rec.volumes.iter().filter(|v| !damaged.contains(v)).cloned().collect();
        // a failed copy leaves the record naming those named ahead: verify restores what is
        // missing, and a rerun ends the move
        let written = repair::copy_onto(ctx, &topo, &path, &rec, from, to).await?;
        if state == State::Unlinked {
            let marker = format!("{MARKER_DIR}{path}");
            ctx.client.put_all(&topo, &targets(&written, &marker), Bytes::from_static(MARKER_BODY)).await?;
        }
    }
    if !extra.is_empty() {
        // until the old replicas are gone the record names them, so a failure leaves no
        // unlisted file; new ones first, so GETs go there (reads skip what follows the
        // first -replicas)
        let both = Record { volumes: want.iter().chain(&extra).cloned().collect(), ..rec.clone() };
        // the key is in `state` (read under the claim): no read to find where it is
        sh.index.set_from(key, Some(state), state, &both)?;
        if let Some(grace) = ctx.move_grace {
            // a server: a redirect answered from the old record a moment ago may still be
            // on its way to an old replica, so the old ones go after a grace, in the
            // background (the key is not held meanwhile)
            ctx.durable().await?;
            let r = Retire { key: key.to_vec(), due: Instant::now() + grace, state, both, extra };
            ctx.retiring.add(&ctx.shared.moves, r);
            return Ok(Outcome::Moved);
        }
        delete_old(ctx, &topo, key, state, &extra).await?;
    }
    sh.index.set_from(key, Some(state), state, &Record { volumes: want, ..rec })?;
    ctx.durable().await?;
    Ok(Outcome::Moved)
}

/// The replicas of `rec` that stay in `want` whose files are not the record's value: read
/// whole and hashed where the record keeps an MD5 (damage of the same size is damage too),
/// else asked their size. One that cannot be read (its volume down) is not counted: it is
/// not known to be damaged, and the move does not need it.
pub async fn damaged_of(ctx: &Ctx, topo: &Topology, path: &str, rec: &Record, want: &[String]) -> Vec<String> {
    let kept: Vec<&String> = rec.volumes.iter().filter(|v| want.contains(v)).collect();
    let damaged = join_all(kept.iter().map(|r| async move {
        match rec.md5 {
            Some(md5) => match repair::digest_of(ctx, topo, r, path, None).await {
                Ok(held) => held != Some((rec.size, md5)),
                Err(_) => false,
            },
            None => {
                let (server, p) = replica_target(r, path);
                matches!(ctx.client.stat(topo, &server, &p).await, Ok(size) if size != Some(rec.size))
            }
        }
    }))
    .await;
    kept.into_iter().zip(damaged).filter(|(_, d)| *d).map(|(r, _)| r.clone()).collect()
}

/// Deletes a moved key's replicas (and unlinked markers) on the volumes it left.
async fn delete_old(ctx: &Ctx, topo: &Topology, key: &[u8], state: State, extra: &[String]) -> Result<(), Error> {
    let path = key_path(key);
    let mut gone = targets(extra, &path);
    if state == State::Unlinked {
        gone.extend(targets(extra, &format!("{MARKER_DIR}{path}")));
    }
    Ok(ctx.client.delete_all(topo, &gone).await?)
}

/// A moved key's old replicas, to delete once `due` (see `-move-grace`).
struct Retire {
    key: Vec<u8>,
    due: Instant,
    /// The key's state and record when they were queued (volumes: new, then `extra`).
    state: State,
    both: Record,
    extra: Vec<String>,
}

/// One server thread's moved keys whose old replicas wait for their grace to pass.
#[derive(Default)]
pub struct Retiring {
    queue: RefCell<VecDeque<Retire>>,
    /// Keys queued or being deleted: the thread's stop waits for them.
    left: Cell<usize>,
}

/// The master's count of old replicas still to delete, all threads (`VOLUMES /` tells it, so
/// that `mkv rebalance -online` ends once they are gone), and of deletions that failed.
#[derive(Default)]
pub struct Moves {
    pub pending: AtomicUsize,
    pub failed: AtomicU64,
}

impl Retiring {
    fn add(&self, moves: &Moves, r: Retire) {
        moves.pending.fetch_add(1, Ordering::Relaxed);
        self.left.set(self.left.get() + 1);
        self.queue.borrow_mut().push_back(r);
    }

    /// The next key whose grace is over. Keys are queued in the order they become due, but
    /// for those put back because a write held them: they wait their turn again.
    fn next_due(&self, now: Instant) -> Option<Retire> {
        let mut q = self.queue.borrow_mut();
        if q.front()?.due <= now {
            q.pop_front()
        } else {
            None
        }
    }

    fn done(&self, moves: &Moves) {
        moves.pending.fetch_sub(1, Ordering::Relaxed);
        self.left.set(self.left.get() - 1);
    }

    /// Keys this thread has still to finish.
    pub fn left(&self) -> usize {
        self.left.get()
    }
}

/// How often a server thread looks for old replicas due for deletion.
const RETIRE_TICK: Duration = Duration::from_millis(100);
/// Keys whose old replicas one thread deletes at once.
const RETIRE_CONCURRENCY: usize = 32;
/// When a write holds a key, how long until its old replicas are tried again.
const RETIRE_BUSY: Duration = Duration::from_millis(50);

/// A server thread's background work: deletes the old replicas of the keys it moved once
/// their grace is over, then the records stop naming them. Runs until the thread ends.
pub async fn retire_loop(ctx: &Ctx) {
    loop {
        monoio::time::sleep(RETIRE_TICK).await;
        let mut work = FuturesUnordered::new();
        loop {
            while work.len() < RETIRE_CONCURRENCY {
                let Some(r) = ctx.retiring.next_due(Instant::now()) else { break };
                work.push(retire(ctx, r));
            }
            if work.next().await.is_none() {
                break;
            }
        }
    }
}

/// Deletes one key's old replicas, unless anything changed the key since it was moved: a
/// write (a PUT over it removed what it replaced, a DELETE every replica its record named,
/// an UNLINK moved it) or a volume change that wants some of them again (those stay, and
/// the record keeps naming them).
async fn retire(ctx: &Ctx, r: Retire) {
    let Ok(_claim) = ctx.claim(&r.key) else {
        ctx.retiring.queue.borrow_mut().push_back(Retire { due: Instant::now() + RETIRE_BUSY, ..r });
        return;
    };
    let done = async {
        let Some((state, rec)) = ctx.shared.index.get(&r.key)? else { return Ok(()) };
        if state != r.state || rec != r.both {
            return Ok(());
        }
        let topo = ctx.topo();
        let wanted = topo.place(&r.key);
        let gone: Vec<String> = r.extra.iter().filter(|v| !wanted.contains(v)).cloned().collect();
        if gone.is_empty() {
            return Ok(());
        }
        delete_old(ctx, &topo, &r.key, state, &gone).await?;
        let volumes = rec.volumes.iter().filter(|v| !gone.contains(v)).cloned().collect();
        ctx.shared.index.set_from(&r.key, Some(state), state, &Record { volumes, ..rec })?;
        ctx.durable().await
    };
    if let Err(e) = done.await {
        ctx.shared.moves.failed.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "mkv: REBALANCE {}: could not delete the old replicas on {} ({e}); its record still \
             names them (a rerun of the rebalance finishes the move)",
            r.key.escape_ascii(),
            r.extra.join(",")
        );
    }
    ctx.retiring.done(&ctx.shared.moves);
}
