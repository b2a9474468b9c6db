//! A key's replicas made whole again. Each replica is checked (HEAD: there, right size), or
//! named bad by a deep verify that read it; a bad one is copied again from a replica whose
//! bytes verify against the record (size and MD5): a small value is read whole and checked
//! before it is written (nginx writes a PUT beside the file and renames it into place), a
//! larger one goes through a temporary file moved into place once it checked out. Either
//! way a corrupt source never spreads and no reader sees a half-written copy. A key with no
//! replica that verifies is left exactly as it is, unless every replica holds the same
//! other value: then the record is the stale one ([`adopt`]).

use bytes::Bytes;
use futures_util::future::join_all;

use super::{
    read::Reader,
    write::{self, Failed},
    Ctx, Error,
};
use crate::{
    index::State,
    md5::Md5,
    placement::{key_path, replica_target, server_of, targets, MARKER_BODY, MARKER_DIR, TMP_DIR},
    record::{majority, now_ms, Record},
    volume::{self, Topology},
};

/// A value up to this size is read whole, checked, then written in place: two requests,
/// not three, and its MD5 is quick enough to compute on the request's thread.
const SMALL_COPY: u64 = 64 << 10;

/// What a repair did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Replicas copied again.
    pub restored: Vec<String>,
    /// Unlink markers written where missing, or removed where the key is live.
    pub markers: usize,
    /// Replicas on volumes that could not be asked: not checked, not repaired (a caller
    /// that found them damaged tries again later).
    pub skipped: Vec<String>,
    /// The record was stale and now names the value every replica holds ([`adopt`]): the
    /// replicas were right, not restored (`restored` lists them, as they are now whole).
    pub adopted: bool,
}

/// Fewest replicas that must hold the same bytes for a repair to adopt them: one alone
/// could be one disk's damage.
const ADOPT_AT_LEAST: usize = 2;

/// What a verify asks done to one key.
#[derive(Default)]
pub struct Ask<'a> {
    /// Replicas a deep read found corrupt (a HEAD cannot tell).
    pub suspects: &'a [String],
    /// Put the unlink markers right.
    pub markers: bool,
    /// Replicas holding files of the key that its record does not name: deleted once the
    /// record's replicas are whole, and until then sources to restore them from.
    pub strays: &'a [String],
    /// The bad replicas, when a listing no write can have changed since says which (an
    /// offline verify: the master is stopped, the index is its own): no HEADs.
    pub known_bad: Option<&'a [String]>,
}

/// Repairs `key` under its lock as `ask` says. Returns what was restored and how many
/// stray replicas were cleared. Strays go last, and only when every replica the record
/// names is there: a stray may hold the only copy left of the value (a replica moved by
/// hand, a disk put back in the wrong slot), and is then what the record's are restored
/// from. A key with no replica that verifies, stray or not, is left exactly as it is.
pub async fn key(ctx: &Ctx, key: &[u8], ask: &Ask<'_>) -> Result<(Repaired, usize), Error> {
    let _claim = ctx.claim(key)?;
    let topo = ctx.topo();
    let record = ctx.shared.index.get(key)?;
    if record.is_none() && ask.strays.is_empty() {
        return Err(Error::NotFound);
    }
    // copies a replacement being written names are its new bytes: neither strays to delete
    // nor sources of the record's value
    let pending = match ask.strays.is_empty() {
        true => Vec::new(),
        false => ctx.shared.index.pending(key)?.map(|p| p.record.volumes).unwrap_or_default(),
    };
    let spare: Vec<String> = ask.strays.iter().filter(|r| !pending.contains(r)).cloned().collect();
    let Some((state, rec)) = record else {
        // no record names the key: its files are orphans
        let cleared = remove_strays(ctx, &topo, key, &[], &spare).await?;
        return Ok((Repaired::default(), cleared));
    };
    let done = match ask.known_bad {
        Some(bad) if !ask.markers => known(ctx, &topo, key, state, &rec, bad, &spare).await,
        _ => restore(ctx, &topo, key, state, &rec, ask.suspects, ask.markers, &spare).await,
    };
    let done = match done {
        Err(Error::NoGoodReplica) => adopt(ctx, &topo, key, state, &rec).await?,
        done => done?,
    };
    if ask.strays.is_empty() || !done.skipped.is_empty() {
        // a replica that could not be asked may be missing: the strays stay for next time
        return Ok((done, 0));
    }
    let cleared = remove_strays(ctx, &topo, key, &rec.volumes, &spare).await?;
    Ok((done, cleared))
}

/// [`restore`] for bad replicas known from the listings.
async fn known(
    ctx: &Ctx,
    topo: &Topology,
    key: &[u8],
    state: State,
    rec: &Record,
    bad: &[String],
    spare: &[String],
) -> Result<Repaired, Error> {
    // replicas on volumes the run did not walk (left out of -volumes) or that are down were
    // not looked at: not vouched for, so the strays stay (see `key`)
    let looked = |r: &String| topo.volumes.iter().any(|v| v == server_of(r)) && topo.is_up(r);
    let skipped: Vec<String> = rec.volumes.iter().filter(|r| !looked(r)).cloned().collect();
    let mut bad: Vec<String> = rec.volumes.iter().filter(|r| looked(r) && bad.contains(r)).cloned().collect();
    let mut good: Vec<String> = rec.volumes.iter().filter(|r| looked(r) && !bad.contains(r)).cloned().collect();
    if bad.is_empty() {
        return Ok(Repaired { skipped, ..Repaired::default() });
    }
    let path = key_path(key);
    restore_from(ctx, topo, &path, rec, &mut good, &mut bad, spare).await?;
    if state == State::Unlinked {
        let m = format!("{MARKER_DIR}{path}");
        ctx.client.put_all(topo, &targets(&bad, &m), Bytes::from_static(MARKER_BODY)).await?;
    }
    Ok(Repaired { restored: bad, skipped, ..Repaired::default() })
}

/// When no replica holds the record's value but every replica holds one same other value
/// (same size, same MD5; at least [`ADOPT_AT_LEAST`] of them), the record is what is stale:
/// an index snapshot restored after the key was written again, a record put back by hand.
/// Nothing mkv does leaves that otherwise (a replacement in flight is pending, and skipped
/// here), and damage does not strike every disk alike; copying the record's lost value is
/// impossible, so the record takes the value the volumes hold. What the record kept beside
/// it (content type, S3's ETag of a multipart upload) was the old value's, and goes; the
/// time is now's, so a reader's `If-Modified-Since` sees the change.
async fn adopt(ctx: &Ctx, topo: &Topology, key: &[u8], state: State, rec: &Record) -> Result<Repaired, Error> {
    let all_up = topo.all_up(&rec.volumes).is_ok();
    // a PUT or DELETE that failed half way names no value: its files are to go, not to adopt
    let unfinished = state.holds_unfinished(rec);
    if rec.volumes.len() < ADOPT_AT_LEAST || !all_up || unfinished || ctx.shared.index.pending(key)?.is_some() {
        return Err(Error::NoGoodReplica);
    }
    let path = key_path(key);
    let mut held = None;
    for r in &rec.volumes {
        let value = digest_of(ctx, topo, r, &path, None).await?;
        if value.is_none() || held.is_some_and(|h| Some(h) != value) {
            return Err(Error::NoGoodReplica);
        }
        held = value;
    }
    let Some((size, md5)) = held else { return Err(Error::NoGoodReplica) };
    let now = Record { size, md5: Some(md5), mtime: now_ms(), meta: Vec::new(), volumes: rec.volumes.clone() };
    ctx.shared.index.set_from(key, Some(state), state, &now)?;
    Ok(Repaired { restored: rec.volumes.clone(), adopted: true, ..Repaired::default() })
}

/// Reads kept to a rate (MiB/s): each piece read waits until the bytes read so far are due.
pub struct Pace {
    began: std::time::Instant,
    bytes: u64,
    bytes_per_sec: f64,
}

impl Pace {
    /// None for no limit (0).
    pub fn new(mib_per_sec: f64) -> Option<Pace> {
        let bytes_per_sec = mib_per_sec * (1 << 20) as f64;
        (mib_per_sec > 0.0).then(|| Pace { began: std::time::Instant::now(), bytes: 0, bytes_per_sec })
    }

    async fn took(&mut self, n: u64) {
        self.bytes += n;
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec);
        if let Some(wait) = due.checked_sub(self.began.elapsed()) {
            monoio::time::sleep(wait).await;
        }
    }
}

/// Size and MD5 of replica `r`'s file, read whole (hashed off the event loop, kept to
/// `pace` when given); None when it is not there.
pub(crate) async fn digest_of(
    ctx: &Ctx,
    topo: &Topology,
    r: &str,
    path: &str,
    mut pace: Option<&mut Pace>,
) -> Result<Option<(u64, [u8; 16])>, Error> {
    let (server, p) = replica_target(r, path);
    let d = ctx.client.download(topo, &server, &p).await?;
    if d.status != 200 {
        return Ok(None);
    }
    let mut from = Reader::new(&ctx.client, Some(d));
    let (mut md5, mut size) = (Md5::new(), 0u64);
    while let Some(piece) = write::Source::next(&mut from, 1 << 20).await? {
        size += piece.len() as u64;
        if let Some(p) = pace.as_deref_mut() {
            p.took(piece.len() as u64).await;
        }
        md5 = write::on_pool(move || {
            md5.update(&piece);
            md5
        })
        .await?;
    }
    Ok(Some((size, md5.finalize())))
}

/// Deletes `key`'s files (value and unlink marker) on `strays` that `named` (its record's
/// replicas) does not name (the caller left out those a replacement being written names).
/// Returns how many replicas were cleared.
async fn remove_strays(
    ctx: &Ctx,
    topo: &Topology,
    key: &[u8],
    named: &[String],
    strays: &[String],
) -> Result<usize, Error> {
    let stray: Vec<String> = strays.iter().filter(|r| !named.contains(r)).cloned().collect();
    if stray.is_empty() {
        return Ok(0);
    }
    let path = key_path(key);
    let mut gone = targets(&stray, &path);
    gone.extend(targets(&stray, &format!("{MARKER_DIR}{path}")));
    ctx.client.delete_all(topo, &gone).await?;
    Ok(stray.len())
}

/// Checks (HEAD) and repairs the replicas `rec` names, for a caller that holds the key's
/// lock and read its record. `suspects`: replicas a deep read found corrupt; `spare`:
/// replicas outside the record holding a copy, tried as sources after the record's own.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    ctx: &Ctx,
    topo: &Topology,
    key: &[u8],
    state: State,
    rec: &Record,
    suspects: &[String],
    markers: bool,
    spare: &[String],
) -> Result<Repaired, Error> {
    let path = key_path(key);
    let stats = join_all(rec.volumes.iter().map(|r| {
        let (server, p) = replica_target(r, &path);
        async move { ctx.client.stat(topo, &server, &p).await }
    }))
    .await;
    let mut bad = Vec::new();
    let mut good = Vec::new();
    let mut done = Repaired::default();
    for (r, st) in rec.volumes.iter().zip(stats) {
        match st {
            Ok(Some(size)) if size == rec.size && !suspects.contains(r) => good.push(r.clone()),
            Ok(_) => bad.push(r.clone()),
            // nothing can be put there until the operator looks
            Err(e @ volume::Error::Folder(_)) => return Err(e.into()),
            // a volume that cannot be asked is not repaired now; its replica may be fine
            Err(_) => done.skipped.push(r.clone()),
        }
    }
    if !bad.is_empty() {
        restore_from(ctx, topo, &path, rec, &mut good, &mut bad, spare).await?;
        done.restored = bad;
    }
    if markers {
        done.markers = fix_markers(ctx, topo, &path, state, rec).await?;
    } else if state == State::Unlinked && !done.restored.is_empty() {
        // a replica copied again needs its unlink marker too
        let m = format!("{MARKER_DIR}{path}");
        ctx.client.put_all(topo, &targets(&done.restored, &m), Bytes::from_static(MARKER_BODY)).await?;
    }
    Ok(done)
}

/// What [`restore_file`] copies: bytes of `size` and `md5`, written at `mtime_ms` (which
/// the copies keep; 0: unknown).
pub struct FileValue {
    pub size: u64,
    pub md5: [u8; 16],
    pub mtime_ms: u64,
}

/// A file no key's record names (a part of an S3 upload in progress) copied again onto
/// `bad` from the first of `good` whose bytes are `value`'s, as a key's replicas are.
/// Returns the replicas restored: `bad`, and any of `good` found not to verify.
pub async fn restore_file(
    ctx: &Ctx,
    topo: &Topology,
    path: &str,
    value: FileValue,
    good: Vec<String>,
    bad: Vec<String>,
) -> Result<Vec<String>, Error> {
    let volumes = good.iter().chain(&bad).cloned().collect();
    let rec = Record { volumes, size: value.size, md5: Some(value.md5), mtime: value.mtime_ms, meta: Vec::new() };
    copy_onto(ctx, topo, path, &rec, good, bad).await
}

/// The value `rec` describes, at `path`, copied onto `to` (volumes lacking it, or holding
/// it damaged) from the first of `from` whose bytes verify (size, and MD5 where the record
/// has one): a damaged replica never spreads. Returns the replicas written: `to`, and any
/// of `from` found not to verify on the way. `NoGoodReplica` when none does.
pub async fn copy_onto(
    ctx: &Ctx,
    topo: &Topology,
    path: &str,
    rec: &Record,
    mut from: Vec<String>,
    mut to: Vec<String>,
) -> Result<Vec<String>, Error> {
    restore_from(ctx, topo, path, rec, &mut from, &mut to, &[]).await?;
    Ok(to)
}

/// Copies the value onto every `bad` replica from the first of `good` that verifies; a
/// source that does not verify joins `bad` (and is restored too). When none of `good`
/// does, `spare` (copies outside the record) are tried the same way.
async fn restore_from(
    ctx: &Ctx,
    topo: &Topology,
    path: &str,
    rec: &Record,
    good: &mut Vec<String>,
    bad: &mut Vec<String>,
    spare: &[String],
) -> Result<(), Error> {
    let mut spare: Vec<String> = spare.iter().filter(|r| !rec.volumes.contains(r)).cloned().collect();
    // a record with no MD5 (a rebuild without -verify, -md5sum=false) does not say which of
    // its same-size replicas is right: one with a flipped byte passed as a source, and a
    // repair or a move spread it over good ones. The value is then what most of them hold.
    let known;
    let rec = match rec.md5 {
        Some(_) => rec,
        None => match held_by_most(ctx, topo, path, rec, good, &spare).await? {
            Some(md5) => {
                known = Record { md5: Some(md5), ..rec.clone() };
                &known
            }
            None => return Err(Error::NoGoodReplica),
        },
    };
    loop {
        // the record's own replicas first; a spare that does not verify is only dropped
        let (src, own) = match good.iter().find(|r| topo.is_up(r)) {
            Some(r) => (r.clone(), true),
            None => match spare.iter().position(|r| topo.is_up(r)) {
                Some(i) => (spare.remove(i), false),
                None => return Err(Error::NoGoodReplica),
            },
        };
        let drop_src = |good: &mut Vec<String>, bad: &mut Vec<String>| {
            if own {
                good.retain(|r| *r != src);
                bad.push(src.clone());
            }
        };
        if rec.size <= SMALL_COPY {
            match read_verified(ctx, topo, &src, path, rec).await? {
                Some(value) => {
                    return Ok(ctx.client.put_all_dated(topo, &targets(bad, path), value, rec.mtime).await?)
                }
                None => {
                    drop_src(good, bad);
                    continue;
                }
            }
        }
        let id = write::copy_id(path);
        let temps = targets(bad, &format!("{TMP_DIR}/{id}"));
        match copy_verified(ctx, topo, &src, path, &temps, rec).await {
            Ok(true) => return write::move_temps(ctx, topo, bad, &id, path).await,
            Ok(false) => {
                // the source's bytes are not the record's: it needs restoring as well
                let _ = ctx.client.delete_all(topo, &temps).await;
                drop_src(good, bad);
            }
            Err(e) => {
                let _ = ctx.client.delete_all(topo, &temps).await;
                return Err(e);
            }
        }
    }
}

/// The MD5 of the value most of the replicas `good` and `spare` on live volumes hold, each
/// read whole (those of the record's size): for a record that keeps no MD5. None when they
/// split with no majority (or none could be read): nothing can tell which is right.
async fn held_by_most(
    ctx: &Ctx,
    topo: &Topology,
    path: &str,
    rec: &Record,
    good: &[String],
    spare: &[String],
) -> Result<Option<[u8; 16]>, Error> {
    let asked: Vec<&String> = good.iter().chain(spare).filter(|r| topo.is_up(r)).collect();
    let mut held = Vec::new();
    for r in &asked {
        if let Some((size, md5)) = digest_of(ctx, topo, r, path, None).await? {
            if size == rec.size {
                held.push(md5);
                // most of all that can be read already agree (two of three): the rest cannot
                // outvote them, and are not read
                if 2 * held.iter().filter(|m| **m == md5).count() > asked.len() {
                    return Ok(Some(md5));
                }
            }
        }
    }
    Ok(majority(&held).map(|(md5, _)| md5))
}

/// Reads replica `src` whole (a small value): its bytes when they are the record's value.
async fn read_verified(
    ctx: &Ctx,
    topo: &Topology,
    src: &str,
    path: &str,
    rec: &Record,
) -> Result<Option<Bytes>, Error> {
    let (server, spath) = replica_target(src, path);
    // one byte more than the record's size shows a longer file without reading all of it
    let (status, body) = match ctx.client.get(topo, &server, &spath, rec.size as usize + 1).await {
        Ok(r) => r,
        Err(volume::Error::Protocol(_, "answer too large")) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let whole = status == 200 && body.len() as u64 == rec.size;
    let same = whole && rec.md5.is_none_or(|m| crate::md5::Md5::digest(&body) == m);
    Ok(same.then(|| Bytes::from(body)))
}

/// Streams replica `src` to `temps`; true when what was read is the record's value.
async fn copy_verified(
    ctx: &Ctx,
    topo: &Topology,
    src: &str,
    path: &str,
    temps: &[(String, String)],
    rec: &Record,
) -> Result<bool, Error> {
    let (server, spath) = replica_target(src, path);
    let d = ctx.client.download(topo, &server, &spath).await?;
    if d.status != 200 {
        return Ok(false);
    }
    let mut from = Reader::new(&ctx.client, Some(d));
    match write::send_all(ctx, topo, temps, &mut from, rec.md5.is_some(), rec.mtime).await {
        Ok(w) => Ok(w.size == rec.size && (rec.md5.is_none() || w.md5 == rec.md5)),
        Err(Failed::Store(e)) => Err(e),
        Err(Failed::Source(e)) => Err(e.into()),
    }
}

/// Unlink markers as the record's state wants them: beside every replica of an unlinked
/// key, nowhere for a live one. Returns how many it wrote or removed.
async fn fix_markers(ctx: &Ctx, topo: &Topology, path: &str, state: State, rec: &Record) -> Result<usize, Error> {
    let m = format!("{MARKER_DIR}{path}");
    let there = join_all(rec.volumes.iter().map(|r| {
        let (server, p) = replica_target(r, &m);
        async move { ctx.client.stat(topo, &server, &p).await }
    }))
    .await;
    let want = state == State::Unlinked;
    let wrong: Vec<String> = rec
        .volumes
        .iter()
        .zip(there)
        .filter(|(_, st)| matches!(st, Ok(found) if found.is_some() != want))
        .map(|(r, _)| r.clone())
        .collect();
    if wrong.is_empty() {
        return Ok(0);
    }
    if want {
        ctx.client.put_all(topo, &targets(&wrong, &m), Bytes::from_static(MARKER_BODY)).await?;
    } else {
        ctx.client.delete_all(topo, &targets(&wrong, &m)).await?;
    }
    Ok(wrong.len())
}
