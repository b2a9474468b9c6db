//! A value's bytes onto its replicas: read from a [`Source`] piece by piece, sent to every
//! replica at once, hashed on the side. A new key is written in place; a replacement (of an
//! unlinked value, or an S3 overwrite) is written beside the final paths and moved into
//! place only once every replica holds it whole, so a failed one leaves the old value as it
//! was.

use bytes::Bytes;
use futures_util::future::{join, join_all};

use super::{relocate, Ctx, Error, KeyGuard};
use crate::{
    index::State,
    md5::Md5,
    placement::{self, key_path, targets, MARKER_BODY, MARKER_DIR, TMP_DIR},
    record::{now_ms, Pending, Phase, Record},
    volume::{self, Topology},
};

/// A body up to this size is read whole and sent to the replicas in one write each
/// (retried on a fresh connection if a pooled one was stale); larger ones are streamed.
pub const SMALL_BODY: usize = 1 << 20;
/// Largest piece of a streamed body read from the source and sent on to the replicas. A
/// quarter MiB keeps a stream's memory near 3 MiB (pieces queued for the replicas and the
/// MD5), so ten concurrent ones (an S3 client's multipart upload) stay far under 64 MiB;
/// larger pieces saved no CPU here (measured at 1 MiB).
const CHUNK: usize = 256 << 10;
/// A piece larger than this is hashed on the blocking pool, not on the runtime thread: MD5
/// runs at ~600-700 MiB/s here, so 1 MiB inline would stall every other connection ~1.5 ms.
const HASH_INLINE: usize = 64 << 10;
/// Pieces of a streamed body waiting for the MD5 before the reading pauses.
const HASH_QUEUE: usize = 6;
/// Most pieces one job on the pool hashes before it lets other PUTs' jobs have the thread.
const HASH_BATCH: usize = 64;

/// Where a value's bytes come from, piece by piece (a client's body, a replica being copied).
#[allow(async_fn_in_trait)] // single-threaded runtime: no Send bound wanted
pub trait Source {
    type Error;
    /// The next piece, at most `max` bytes; `None` at the end.
    async fn next(&mut self, max: usize) -> Result<Option<Bytes>, Self::Error>;
    /// The whole length, when known before the bytes (it is then checked).
    fn len(&self) -> Option<u64>;
    /// Called once every byte was read and sent, before anything is committed: a source
    /// that checks its bytes as a whole (an S3 checksum) refuses them here.
    async fn end(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A write failed in the store, or its source failed (the front end says which to its client).
#[derive(Debug)]
pub enum Failed<E> {
    Store(Error),
    Source(E),
}

impl<E, T: Into<Error>> From<T> for Failed<E> {
    fn from(e: T) -> Self {
        Failed::Store(e.into())
    }
}

/// How a front end wants a key written.
pub struct PutOpts {
    /// Replace a live key (S3) instead of refusing it ([`Error::Exists`]).
    pub replace_live: bool,
    /// An empty value is a value (S3), not [`Error::EmptyBody`].
    pub allow_empty: bool,
    pub md5: bool,
    /// Front-end metadata kept in the record.
    pub meta: Vec<u8>,
    /// The MD5 the bytes must have (a copy: its source's record's, with `md5`): other bytes
    /// (a damaged replica read) are refused before anything is committed, [`Error::Damaged`].
    pub expect_md5: Option<[u8; 16]>,
}

impl PutOpts {
    /// `w` if it holds the bytes expected, else [`Error::Damaged`].
    fn expected<E>(&self, w: Written) -> Result<Written, Failed<E>> {
        Ok(as_expected(self.expect_md5, w)?)
    }
}

/// `w` if its MD5 is `expect` (or nothing is expected), else [`Error::Damaged`]: a copy's
/// bytes that are not its source's value (a damaged replica read).
pub fn as_expected(expect: Option<[u8; 16]>, w: Written) -> Result<Written, Error> {
    match (expect, w.md5) {
        (Some(want), Some(got)) if want != got => Err(Error::Damaged),
        _ => Ok(w),
    }
}

/// The bytes one write sent.
pub struct Written {
    pub size: u64,
    pub md5: Option<[u8; 16]>,
}

/// Refuses keys the volumes cannot hold: too long for a file name, or a file name that
/// another key's could merge with.
pub fn check_key(key: &[u8]) -> Result<(), Error> {
    if !placement::key_fits(key) {
        return Err(Error::KeyTooLong);
    }
    match placement::key_unstorable(key) {
        Some(why) => Err(Error::BadKey(why)),
        None => Ok(()),
    }
}

/// Writes `key` from `src`: claims it, writes every replica, then records it live. Returns
/// the record written.
pub async fn put<S: Source>(ctx: &Ctx, key: &[u8], src: &mut S, opts: &PutOpts) -> Result<Record, Failed<S::Error>> {
    check_key(key)?;
    let claim = ctx.claim(key)?;
    put_claimed(ctx, claim, key, src, opts).await
}

/// [`put`] under a claim of `key` its caller took (and may have checked the record under,
/// as S3's conditional writes do); the claim is released once the record is written.
pub async fn put_claimed<S: Source>(
    ctx: &Ctx,
    claim: KeyGuard<'_>,
    key: &[u8],
    src: &mut S,
    opts: &PutOpts,
) -> Result<Record, Failed<S::Error>> {
    assert_eq!(claim.key(), key, "a write under another key's claim");
    let sh = &ctx.shared;
    check_key(key)?;
    settle_pending(ctx, &claim, key).await?;
    let prior = sh.index.get(key)?;
    if let Some((State::Live, _)) = prior {
        if !opts.replace_live {
            return Err(Error::Exists.into());
        }
        // -protect: a live value goes only after an UNLINK, replaced or deleted alike
        if sh.cfg.protect {
            return Err(Error::Protected.into());
        }
    }
    let topo = ctx.topo();
    let replicas = topo.place(key);
    topo.all_up(&replicas).map_err(Error::Volume)?;
    let (first, done) = read_first(src).await.map_err(Failed::Source)?;
    if first.is_empty() && !opts.allow_empty {
        return Err(Error::EmptyBody.into());
    }
    let first = Body { first, done };
    let rec = match prior {
        None => in_place(ctx, &topo, key, replicas, src, first, opts).await?,
        Some((state, old)) => staged(ctx, &topo, key, (state, old), replicas, src, first, opts).await?,
    };
    drop(claim);
    if !std::rc::Rc::ptr_eq(&topo, &ctx.topo()) {
        // the volume list changed while this PUT ran (an online rebalance): an online
        // rebalance may have listed keys before this one existed, so move it now
        if let Err(e) = relocate::one(ctx, key, false).await {
            eprintln!("mkv: PUT {}: written, but not moved to the new volumes: {e}", key.escape_ascii());
        }
    }
    Ok(rec)
}

/// The first piece of a body, read whole up to [`SMALL_BODY`], and whether it is all.
struct Body {
    first: Bytes,
    done: bool,
}

async fn read_first<S: Source>(src: &mut S) -> Result<(Bytes, bool), S::Error> {
    // a body known to be large is streamed from its first piece: read whole, its first MiB
    // was a third of a stream's memory (an S3 client's ten parts in flight held 59 MiB of
    // the master's 64 MiB bound; six `aws s3 cp` at once, 170 MiB)
    if src.len().is_some_and(|n| n > SMALL_BODY as u64) {
        return Ok(match src.next(CHUNK).await? {
            Some(c) => (c, false),
            None => (Bytes::new(), true),
        });
    }
    let mut first = Vec::new();
    while first.len() < SMALL_BODY {
        match src.next(SMALL_BODY - first.len()).await? {
            Some(c) if first.is_empty() && c.len() == SMALL_BODY => return Ok((c, false)),
            Some(c) => first.extend_from_slice(&c),
            None => return Ok((Bytes::from(first), true)),
        }
    }
    Ok((Bytes::from(first), false))
}

/// A new key: an `unlinked` record names the replicas first (a crash leaves a listed,
/// deletable trace), the files are written at their final paths, one batch makes it live.
async fn in_place<S: Source>(
    ctx: &Ctx,
    topo: &Topology,
    key: &[u8],
    replicas: Vec<String>,
    src: &mut S,
    body: Body,
    opts: &PutOpts,
) -> Result<Record, Failed<S::Error>> {
    let sh = &ctx.shared;
    let pending = Record::placeholder(replicas.clone());
    // the key had no record (put() read it under the claim): nothing to delete anywhere
    sh.index.set_from(key, None, State::Unlinked, &pending)?;
    let to = targets(&replicas, &key_path(key));
    match send(ctx, topo, &to, src, body, opts.md5, 0).await.and_then(|w| opts.expected(w)) {
        Ok(w) => {
            let rec = Record { volumes: replicas, size: w.size, md5: w.md5, mtime: now_ms(), meta: opts.meta.clone() };
            sh.index.set_from(key, Some(State::Unlinked), State::Live, &rec)?;
            ctx.durable().await?;
            Ok(rec)
        }
        Err(e) => {
            // only files this PUT wrote: a volume that took a whole body late is fenced by
            // the client, so these DELETEs cannot be overtaken
            match ctx.client.delete_present(topo, &to).await {
                Ok(_) => {
                    if let Err(e) = sh.index.remove(key) {
                        eprintln!("mkv: PUT {}: {e}", key.escape_ascii());
                    }
                }
                Err(e) => {
                    super::remove::mark_unfinished(ctx, topo, &replicas, key).await;
                    eprintln!(
                        "mkv: PUT {} failed and its replicas could not be removed yet ({e}); it is listed under \
                         ?unlinked until the master can",
                        key.escape_ascii()
                    );
                    sh.unfinished.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_vec());
                }
            }
            Err(e)
        }
    }
}

/// A replacement: written to `/_tmp/<id>` beside each final path while the old value stays
/// whole, then moved into place (see [`Pending`]).
#[allow(clippy::too_many_arguments)]
async fn staged<S: Source>(
    ctx: &Ctx,
    topo: &Topology,
    key: &[u8],
    (state, old): (State, Record),
    replicas: Vec<String>,
    src: &mut S,
    body: Body,
    opts: &PutOpts,
) -> Result<Record, Failed<S::Error>> {
    let sh = &ctx.shared;
    let mut p = Pending {
        id: temp_id(),
        phase: Phase::Writing,
        live: true,
        record: Record { volumes: replicas.clone(), ..Record::default() },
        old_only: old.volumes.iter().filter(|v| !replicas.contains(v)).cloned().collect(),
        old_markers: if state == State::Unlinked { old.volumes.clone() } else { Vec::new() },
    };
    sh.index.set_pending(key, &p)?;
    let temps = targets(&replicas, &format!("{TMP_DIR}/{}", p.id));
    let w = match send(ctx, topo, &temps, src, body, opts.md5, 0).await.and_then(|w| opts.expected(w)) {
        Ok(w) => w,
        Err(e) => {
            roll_back(ctx, topo, key, &temps).await;
            return Err(e);
        }
    };
    p.record = Record { volumes: replicas, size: w.size, md5: w.md5, mtime: now_ms(), meta: opts.meta.clone() };
    p.phase = Phase::Moving;
    sh.index.set_pending(key, &p)?;
    // readers that stream the value through the master check this number before and after
    // they open a replica: a move between the two makes them read again
    sh.index.bump(key);
    // from here on the replacement is rolled forward, even after a crash; a failed move (or
    // commit) leaves it to recovery, as unlinked if its client was told it failed
    let moved = match move_into_place(ctx, topo, key, &p).await {
        Ok(()) => commit(ctx, topo, key, &p).await,
        Err(e) => Err(e),
    };
    if let Err(e) = moved {
        p.live = state == State::Live;
        if let Err(e) = sh.index.set_pending(key, &p) {
            eprintln!("mkv: PUT {}: {e}", key.escape_ascii());
        }
        return Err(e.into());
    }
    ctx.durable().await?;
    Ok(p.record)
}

/// A name for temporary files no other write uses: time and a per-process counter.
pub fn temp_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{:x}-{:x}-{:x}", now_ms(), std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The temporary name (under `/_tmp`) of a copy of the file at `path`, a repair's or a
/// move's: the same for the same file, so that a copy a killed run left half way is replaced
/// by the rerun's and moved into place, not left behind for good (a volume that then leaves
/// the list is never looked at again). Two copies of one file are never made at once: its
/// key's (or part's) lock is held.
pub fn copy_id(path: &str) -> String {
    use std::fmt::Write as _;
    let mut id = String::from("copy-");
    for b in crate::md5::Md5::digest(path.as_bytes()) {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// A staged write failed before any move: its temporary files go, the old value stays.
async fn roll_back(ctx: &Ctx, topo: &Topology, key: &[u8], temps: &[(String, String)]) {
    match ctx.client.delete_present(topo, temps).await {
        Ok(_) => {
            if let Err(e) = ctx.shared.index.remove_pending(key) {
                eprintln!("mkv: PUT {}: {e}", key.escape_ascii());
            }
        }
        // the pending entry stays: recovery deletes them later
        Err(e) => eprintln!("mkv: PUT {}: its temporary files could not be removed yet ({e})", key.escape_ascii()),
    }
}

/// Moves every temporary file of `p` to the key's path. A temporary file already gone was
/// moved by an earlier try (recovery runs this again after a crash).
async fn move_into_place(ctx: &Ctx, topo: &Topology, key: &[u8], p: &Pending) -> Result<(), Error> {
    move_temps(ctx, topo, &p.record.volumes, &p.id, &key_path(key)).await
}

/// Moves `/_tmp/<id>` to `path` on each of `replicas`, all at once.
pub async fn move_temps(ctx: &Ctx, topo: &Topology, replicas: &[String], id: &str, path: &str) -> Result<(), Error> {
    let moves = replicas.iter().map(|r| {
        let (server, tmp) = placement::replica_target(r, &format!("{TMP_DIR}/{id}"));
        let (_, dest) = placement::replica_target(r, path);
        async move {
            let extra = format!("Destination: {dest}\r\nOverwrite: T\r\n");
            let status = ctx.client.request_with(topo, &server, "MOVE", &tmp, extra.as_bytes(), Bytes::new()).await?;
            match status {
                201 | 204 => Ok(()),
                404 => Ok(()),
                s => Err(Error::Volume(volume::Error::Status(server, s))),
            }
        }
    });
    join_all(moves).await.into_iter().collect()
}

/// A replacement is in place: one batch records it (and drops its pending entry), then the
/// old value's files on volumes the new replicas left go (best effort: what stays is an
/// orphan `mkv verify` finds).
///
/// The unlink markers a `rebuild` reads are settled before the record: none may stay beside
/// a key about to be live (rebuild would restore it unlinked, though its PUT got a `201`),
/// nor on a volume an unlinked one left; one rolled forward unlinked (its client was told it
/// failed) gets them beside its new replicas, as UNLINK leaves them. If they cannot be (a
/// volume down or failing), the replacement stays pending, an error: the write fails and
/// recovery tries again, rather than the record forgetting a marker it alone could find.
async fn commit(ctx: &Ctx, topo: &Topology, key: &[u8], p: &Pending) -> Result<(), Error> {
    let path = key_path(key);
    let marker = format!("{MARKER_DIR}{path}");
    if p.live {
        // beside the new replicas too: a recovery of an earlier try may have marked them
        let mut unmarked = p.old_markers.clone();
        if !unmarked.is_empty() {
            unmarked.extend(p.record.volumes.iter().filter(|v| !p.old_markers.contains(v)).cloned());
        }
        ctx.client.delete_all(topo, &targets(&unmarked, &marker)).await?;
    } else {
        let left: Vec<String> = p.old_markers.iter().filter(|v| !p.record.volumes.contains(v)).cloned().collect();
        ctx.client.delete_all(topo, &targets(&left, &marker)).await?;
        ctx.client.put_all(topo, &targets(&p.record.volumes, &marker), Bytes::from_static(MARKER_BODY)).await?;
    }
    let to = if p.live { State::Live } else { State::Unlinked };
    ctx.shared.index.commit_pending(key, to, &p.record)?;
    if let Err(e) = ctx.client.delete_all(topo, &targets(&p.old_only, &path)).await {
        eprintln!("mkv: PUT {}: could not remove the replaced value's files yet: {e}", key.escape_ascii());
    }
    Ok(())
}

/// Finishes what a crash or a failed move left in the `pending` family: replacements still
/// being written are rolled back, those being moved are rolled forward. Keys another write
/// holds are skipped. Returns how many entries were settled.
pub async fn recover(ctx: &Ctx) -> Result<usize, Error> {
    let mut settled = 0;
    let mut start = Vec::new();
    // a key whose volume is still down waits for the next call; the others go on
    let mut last_failure = None;
    loop {
        let keys = ctx.shared.index.pending_keys(&start, 256)?;
        let Some(last) = keys.last() else { break };
        start = last.clone();
        start.push(0);
        for key in keys {
            let Ok(_claim) = ctx.claim(&key) else { continue };
            let Some(p) = ctx.shared.index.pending(&key)? else { continue };
            match settle(ctx, &key, &p).await {
                Ok(()) => settled += 1,
                Err(e @ Error::Index(_)) => return Err(e),
                Err(e) => last_failure = Some(e),
            }
        }
    }
    match last_failure {
        Some(e) if settled == 0 => Err(e),
        _ => Ok(settled),
    }
}

/// Settles a replacement of `key` a failed move or a crash left pending, as recovery would,
/// before anything else changes the key (its caller holds `claim`). A write meanwhile put
/// its own replacement in the pending entry's place, and the moves already done were
/// forgotten: the record kept the old value while the replicas held the new one. While a
/// volume the moves need cannot take them, this fails, and so does what wanted the key.
pub async fn settle_pending(ctx: &Ctx, claim: &KeyGuard<'_>, key: &[u8]) -> Result<(), Error> {
    assert_eq!(claim.key(), key, "a replacement settled under another key's claim");
    match ctx.shared.index.pending(key)? {
        Some(p) => settle(ctx, key, &p).await,
        None => Ok(()),
    }
}

/// One pending replacement settled: rolled back while it was being written, forward once
/// it was being moved.
async fn settle(ctx: &Ctx, key: &[u8], p: &Pending) -> Result<(), Error> {
    let topo = ctx.topo();
    topo.all_up(&p.record.volumes)?;
    match p.phase {
        Phase::Writing => {
            // some or none written (a retry may have deleted them already): asked first
            let temps = targets(&p.record.volumes, &format!("{TMP_DIR}/{}", p.id));
            ctx.client.delete_present(&topo, &temps).await?;
            ctx.shared.index.remove_pending(key)?;
        }
        Phase::Moving => {
            move_into_place(ctx, &topo, key, p).await?;
            commit(ctx, &topo, key, p).await?;
        }
    }
    Ok(())
}

/// Sends all of `src` to every target (a copy between volumes, a repair); `modified_ms`,
/// when known (not 0), is the value's time, which the copies keep.
pub async fn send_all<S: Source>(
    ctx: &Ctx,
    topo: &Topology,
    to: &[(String, String)],
    src: &mut S,
    md5: bool,
    modified_ms: u64,
) -> Result<Written, Failed<S::Error>> {
    let (first, done) = read_first(src).await.map_err(Failed::Source)?;
    send(ctx, topo, to, src, Body { first, done }, md5, modified_ms).await
}

/// A body that ended before the length it declared: the source says why where it can (an
/// `aws-chunked` body short of its decoded length is the client's fault, a `400`), else
/// it is a fault of the master's own.
async fn short<S: Source>(src: &mut S) -> Failed<S::Error> {
    match src.end().await {
        Err(e) => Failed::Source(e),
        Ok(()) => Error::Internal("the body ended before its declared length").into(),
    }
}

/// Sends a body to every target: the first piece as it is when it is all, else streamed.
async fn send<S: Source>(
    ctx: &Ctx,
    topo: &Topology,
    to: &[(String, String)],
    src: &mut S,
    body: Body,
    md5: bool,
    modified_ms: u64,
) -> Result<Written, Failed<S::Error>> {
    let md5 = md5.then(Md5::new);
    let Body { first, done } = body;
    if done {
        let size = first.len() as u64;
        if src.len().is_some_and(|n| n != size) {
            return Err(short(src).await);
        }
        src.end().await.map_err(Failed::Source)?;
        let put = ctx.client.put_all_dated(topo, to, first.clone(), modified_ms);
        let (sent, hashed) = join(put, hash(md5, first)).await;
        let md5 = hashed?;
        sent?;
        return Ok(Written { size, md5: md5.map(|h| h.finalize()) });
    }
    stream(ctx, topo, to, src, first, md5, modified_ms).await
}

/// Adds `piece` to the MD5 (if one is kept), on the blocking pool when the piece is large.
async fn hash(md5: Option<Md5>, piece: Bytes) -> Result<Option<Md5>, Error> {
    let Some(mut h) = md5 else { return Ok(None) };
    if piece.len() <= HASH_INLINE {
        h.update(&piece);
        return Ok(Some(h));
    }
    on_pool(move || {
        h.update(&piece);
        Some(h)
    })
    .await
}

/// Hashes the pieces of a streamed body in order as they are queued. One job on the pool
/// hashes whatever is queued, up to [`HASH_BATCH`] pieces, before handing back: a job per
/// piece would wait for this (busy) runtime thread between every two pieces.
async fn hash_all(mut md5: Md5, pieces: flume::Receiver<Bytes>) -> Result<Md5, Error> {
    while let Ok(first) = pieces.recv_async().await {
        let more = pieces.clone();
        md5 = on_pool(move || {
            md5.update(&first);
            for _ in 1..HASH_BATCH {
                match more.try_recv() {
                    Ok(p) => md5.update(&p),
                    Err(_) => break,
                }
            }
            md5
        })
        .await?;
    }
    Ok(md5)
}

/// Runs `f` on the blocking pool and waits for it without blocking this runtime thread.
pub async fn on_pool<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    monoio::spawn_blocking(f).await.map_err(|_| Error::Internal("the blocking thread pool dropped a job"))
}

/// Streams a large body: each piece read from the source goes to every replica at once.
async fn stream<S: Source>(
    ctx: &Ctx,
    topo: &Topology,
    to: &[(String, String)],
    src: &mut S,
    first: Bytes,
    md5: Option<Md5>,
    modified_ms: u64,
) -> Result<Written, Failed<S::Error>> {
    let len = src.len();
    let mut up = ctx.client.upload_dated(topo, to, len, modified_ms).await?;
    // three stages run side by side, each at its own pace: reading the next piece from the
    // source, the replicas' writers (queued in the client) and the MD5 (queued here, hashed
    // on the blocking pool); a full queue pauses the reading
    let (hash_tx, hash_rx) = flume::bounded::<Bytes>(HASH_QUEUE);
    let hasher = md5.map(|h| monoio::spawn(hash_all(h, hash_rx)));
    let mut piece = first;
    let mut size = 0u64;
    loop {
        size += piece.len() as u64;
        if hasher.is_some() && hash_tx.send_async(piece.clone()).await.is_err() {
            return Err(Error::Internal("the hashing task stopped").into());
        }
        let (sent, next) = join(ctx.client.upload_chunk(&mut up, piece), src.next(CHUNK)).await;
        sent?;
        match next.map_err(Failed::Source)? {
            Some(chunk) => piece = chunk,
            None => break,
        }
    }
    if len.is_some_and(|n| n != size) {
        ctx.client.upload_cancel(up).await;
        return Err(short(src).await);
    }
    if let Err(e) = src.end().await {
        // a replica that took the whole body is answered first, so the caller's clean-up
        // cannot overtake it
        ctx.client.upload_cancel(up).await;
        return Err(Failed::Source(e));
    }
    drop(hash_tx);
    let md5 = match hasher {
        Some(h) => Some(h.await?.finalize()),
        None => None,
    };
    ctx.client.upload_finish(up).await?;
    Ok(Written { size, md5 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `left` bytes, handed out in pieces as large as asked, declaring `declared`.
    struct Given {
        left: usize,
        declared: Option<u64>,
    }

    impl Source for Given {
        type Error = ();
        async fn next(&mut self, max: usize) -> Result<Option<Bytes>, ()> {
            let n = max.min(self.left);
            self.left -= n;
            Ok((n > 0).then(|| Bytes::from(vec![7u8; n])))
        }
        fn len(&self) -> Option<u64> {
            self.declared
        }
    }

    fn first_of(left: usize, declared: Option<u64>) -> (usize, bool) {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
        let (first, done) = rt.block_on(read_first(&mut Given { left, declared })).unwrap();
        (first.len(), done)
    }

    #[test]
    fn a_body_known_to_be_large_is_streamed_from_its_first_piece() {
        assert_eq!(first_of(8 << 20, Some(8 << 20)), (CHUNK, false));
        assert_eq!(first_of(SMALL_BODY + 1, Some(SMALL_BODY as u64 + 1)), (CHUNK, false));
        // of unknown length: read up to SMALL_BODY, to tell a small one
        assert_eq!(first_of(8 << 20, None), (SMALL_BODY, false));
        assert_eq!(first_of(5000, None), (5000, true));
        // small ones whole, as before
        assert_eq!(first_of(SMALL_BODY, Some(SMALL_BODY as u64)), (SMALL_BODY, false));
        assert_eq!(first_of(5000, Some(5000)), (5000, true));
    }
}
