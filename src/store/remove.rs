//! Taking a key away: DELETE removes its replicas, then its record; UNLINK leaves the data
//! and a marker beside each replica (so `rebuild` restores it as unlinked), then moves the
//! record to `unlinked`.

use std::{collections::HashSet, sync::Mutex};

use bytes::Bytes;

use super::{Ctx, Error, KeyGuard};
use crate::{
    index::{Index, State},
    placement::{key_path, targets, MARKER_BODY, MARKER_DIR, TMP_DIR},
    record::{Pending, Phase, Record, RecordRef},
};

/// DELETE: the record goes to `unlinked` first, as a placeholder (so a failure leaves it
/// listed, a retry finds it, and verify and repair take its files for a delete's to finish,
/// not a value's to restore), then every file of the key, then the record. With `protect`,
/// a live key is refused.
pub async fn delete(ctx: &Ctx, key: &[u8], protect: bool) -> Result<(), Error> {
    let claim = ctx.claim(key)?;
    delete_claimed(ctx, claim, key, protect).await
}

/// [`delete`] under a claim of `key` its caller took (and may have checked the record under).
pub async fn delete_claimed(ctx: &Ctx, claim: KeyGuard<'_>, key: &[u8], protect: bool) -> Result<(), Error> {
    assert_eq!(claim.key(), key, "a delete under another key's claim");
    let sh = &ctx.shared;
    let (state, rec) = sh.index.get(key)?.ok_or(Error::NotFound)?;
    if protect && state == State::Live {
        return Err(Error::Protected);
    }
    let path = key_path(key);
    let marker = format!("{MARKER_DIR}{path}");
    // the values' files, then the unlink markers: while a file is left, the markers keep a
    // rebuild from restoring the key live
    let mut files = targets(&rec.volumes, &path);
    let mut markers = if state == State::Unlinked { targets(&rec.volumes, &marker) } else { Vec::new() };
    // markers a failed UNLINK may have left beside the live key, not yet deleted (the
    // master restarted since, the sweep not there yet): they go with it, or a later PUT of
    // the key would be rebuilt unlinked (the sweep then forgets the key)
    let stray = state == State::Live && sh.stray_markers.lock().unwrap_or_else(|e| e.into_inner()).contains(key);
    if stray {
        markers = targets(&rec.volumes, &marker);
    }
    // a replacement a crash left half done goes with the key
    let pending = sh.index.pending(key)?;
    let mut volumes = rec.volumes.clone();
    if let Some(p) = &pending {
        files.extend(targets(&p.record.volumes, &format!("{TMP_DIR}/{}", p.id)));
        files.extend(targets(&p.record.volumes, &path));
        markers.extend(targets(&p.old_markers, &marker));
        volumes.extend(p.record.volumes.iter().filter(|v| !rec.volumes.contains(v)).cloned());
    }
    // what a failed write or delete left (a client's retry, or the server's once the volumes
    // are up): some files are gone already, asked for first rather than DELETEd again (nginx
    // logs a DELETE of a missing file as an error); a key's own files are there
    let unfinished = state.holds_unfinished(&rec);
    let holder = Record::placeholder(volumes);
    match &pending {
        // in the same batch: a recovery must not roll the replacement forward, live, over
        // a delete that failed half way; it rolls it back instead, deleting the temporary
        // files a volume out of reach keeps (they go with the key's when the delete ends)
        Some(p) => {
            let rollback = Pending { phase: Phase::Writing, ..p.clone() };
            sh.index.abandon_pending(key, State::Unlinked, &holder, &rollback)?
        }
        None if unfinished => {}
        None => sh.index.set_from(key, Some(state), State::Unlinked, &holder)?,
    }
    let topo = ctx.topo();
    let delete = async |targets: &[(String, String)], maybe: bool| {
        if maybe {
            ctx.client.delete_present(&topo, targets).await.map(|_| ())
        } else {
            ctx.client.delete_all(&topo, targets).await
        }
    };
    if let Err(e) = delete(&files, unfinished).await {
        // a live key had none: markers now, for as long as a file may be left (an unlinked
        // key's stay, and a failed write's or delete's have theirs from its first failure)
        if state == State::Live {
            mark_unfinished(ctx, &topo, &holder.volumes, key).await;
        }
        return Err(e.into());
    }
    if !markers.is_empty() || unfinished {
        // a placeholder's markers are on its volumes if its first failure could write them
        if unfinished {
            for t in targets(&holder.volumes, &marker) {
                if !markers.contains(&t) {
                    markers.push(t);
                }
            }
        }
        delete(&markers, unfinished || stray).await?;
    }
    sh.index.remove(key)?;
    ctx.durable().await
}

/// A delete (of a key, or of what a failed PUT wrote) that could not reach every file: the
/// key stays under `?unlinked` until a retry ends it, and an unlink marker goes on every
/// volume that takes one, so that a `rebuild` over the volumes restores the key unlinked
/// too. A replica left on a volume that was down carries no marker of its own; rebuild
/// takes a key for unlinked when any volume holds its marker (it came back live, SPEC.md's
/// "restores unlinked keys as unlinked" broken). Best effort: the retry deletes them all.
/// Returns whether any volume took one (each marker is put on its own).
pub(super) async fn mark_unfinished(ctx: &Ctx, topo: &crate::volume::Topology, volumes: &[String], key: &[u8]) -> bool {
    let markers = targets(volumes, &format!("{MARKER_DIR}{}", key_path(key)));
    let body = Bytes::from_static(MARKER_BODY);
    let put = markers.iter().map(|t| ctx.client.put_all(topo, std::slice::from_ref(t), body.clone()));
    futures_util::future::join_all(put).await.iter().any(Result::is_ok)
}

/// Hands a DELETE that failed for a volume out of reach (its key now the placeholder
/// [`delete_claimed`] left under `unlinked`) to [`finish`], which ends it once the volumes
/// are back: for S3's DeleteObject, which S3 always takes, where a native DELETE's failure
/// is its client's to retry. Returns whether a volume of the key holds its unlink marker
/// (put again, [`mark_unfinished`]): without one, a `rebuild` before the delete ends would
/// restore the key live from a file left on a volume that was down, so the delete may not
/// be taken as done. A write of the key that came in meanwhile decides it instead (markers
/// beside a value it makes live would have a rebuild restore that unlinked).
pub async fn finish_later(ctx: &Ctx, key: &[u8]) -> Result<bool, Error> {
    ctx.shared.unfinished.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_vec());
    let Ok(_claim) = ctx.claim(key) else { return Ok(true) };
    let rec = match ctx.shared.index.get(key)? {
        Some((state, rec)) if state.holds_unfinished(&rec) => rec,
        _ => return Ok(true),
    };
    Ok(mark_unfinished(ctx, &ctx.topo(), &rec.volumes, key).await)
}

/// Deletes what failed PUTs could not ([`Shared::unfinished`]), as a DELETE would, while
/// each key is still the placeholder its PUT left (a PUT since replaced it, a DELETE ended
/// it); one busy or whose volume is still down waits for the next call. So are the DELETEs
/// handed over by [`finish_later`]. Another failed DELETE's key is left to its client's
/// retry, which SPEC.md promises it, until a restart (then [`adopt_forgotten`] cannot tell
/// it from a failed PUT's, and its DELETE is finished). Returns how many went, and the
/// last failure.
///
/// [`Shared::unfinished`]: super::Shared
pub async fn finish(ctx: &Ctx) -> (usize, Option<Error>) {
    sweep(ctx, &ctx.shared.unfinished, async |claim, key, found| match found {
        Some((state, rec)) if state.holds_unfinished(&rec) => {
            ctx.topo().all_up(&rec.volumes)?;
            delete_claimed(ctx, claim, key, false).await.map(|()| true)
        }
        _ => Ok(false),
    })
    .await
}

/// Failed PUTs a restart forgot ([`Shared::unfinished`] lives in memory): the placeholders
/// under `unlinked` that a PUT cut by a crash or by the end of `-drain` left, with no value
/// behind them, listed for good. A page of up to `n` keys after `after` is handed to
/// [`finish`], which ends them as it ends failed PUTs (a placeholder a PUT in flight holds
/// is passed over while held, and is no placeholder once the PUT is done; one a failed
/// DELETE left is that DELETE finished). Returns the key to go on after, None at the end.
///
/// [`Shared::unfinished`]: super::Shared
pub fn adopt_forgotten(ctx: &Ctx, after: Option<&[u8]>, n: usize) -> Result<Option<Vec<u8>>, Error> {
    let (found, last) = placeholders(&ctx.shared.index, after, n)?;
    ctx.shared.unfinished.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
    Ok(last)
}

/// Keys, and the key a page ended at when there may be more.
type Page = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// The placeholders among the next `n` unlinked keys after `after` (from the first without
/// it), and the last key read when there may be more.
fn placeholders(index: &Index, after: Option<&[u8]>, n: usize) -> Result<Page, Error> {
    let start = after.map(|a| [a, &[0]].concat()).unwrap_or_default();
    let mut scan = index.scan(State::Unlinked, b"", &start);
    let (mut found, mut last) = (Vec::new(), None);
    for _ in 0..n {
        let Some((k, v)) = scan.next() else {
            last = None;
            break;
        };
        if RecordRef::parse(v).is_ok_and(|r| r.is_placeholder()) {
            found.push(k.to_vec());
        }
        last = Some(k.to_vec());
    }
    scan.status()?;
    Ok((found, last))
}

/// Runs `each` on every key of `set` (with the key's claim and its record), leaving out a
/// key a write holds now (its business first); a key `each` handled leaves the set, one it
/// failed stays for the next call. Returns how many it did something for, and the last
/// failure.
async fn sweep<'c>(
    ctx: &'c Ctx,
    set: &Mutex<HashSet<Vec<u8>>>,
    mut each: impl AsyncFnMut(KeyGuard<'c>, &[u8], Option<(State, Record)>) -> Result<bool, Error>,
) -> (usize, Option<Error>) {
    let keys: Vec<Vec<u8>> = set.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
    let (mut done, mut last) = (0, None);
    for key in keys {
        let Ok(claim) = ctx.claim(&key) else { continue };
        let outcome = match ctx.shared.index.get(&key) {
            Ok(found) => each(claim, &key, found).await,
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok(acted) => {
                done += usize::from(acted);
                set.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            }
            Err(e) => last = Some(e),
        }
    }
    (done, last)
}

/// UNLINK: a marker beside each replica, then one batch moves the record to `unlinked`.
/// Returns the record.
pub async fn unlink(ctx: &Ctx, key: &[u8]) -> Result<Record, Error> {
    let sh = &ctx.shared;
    let claim = ctx.claim(key)?;
    // a replacement left pending would be rolled forward live over the unlink; one that
    // cannot be settled now (a volume out of reach) and will not make the key live leaves
    // a key that is not live as it is: SPEC.md's 404, not the volume's 503
    if let Err(e) = super::write::settle_pending(ctx, &claim, key).await {
        let becomes_live = sh.index.pending(key)?.is_some_and(|p| p.live && p.phase == Phase::Moving);
        if !becomes_live && sh.index.get_pinned(State::Live, key)?.is_none() {
            return Err(Error::NotFound);
        }
        return Err(e);
    }
    let Some(pinned) = sh.index.get_pinned(State::Live, key)? else {
        return Err(Error::NotFound);
    };
    let rec = pinned.record()?.to_owned();
    drop(pinned);
    let markers = targets(&rec.volumes, &format!("{MARKER_DIR}{}", key_path(key)));
    let topo = ctx.topo();
    // named first, so that markers left beside the live key (the UNLINK fails, the master
    // is killed) are deleted even after a restart: a rebuild would restore it unlinked
    sh.index.note_marking(key)?;
    // with -sync, on disk before any marker is: a power cut must not lose the note
    ctx.durable().await?;
    // a volume that took a marker but did not answer has a DELETE of it queued behind on
    // the same connection (the client's fence), so the clean-up below cannot be overtaken
    let written = ctx.client.put_all(&topo, &markers, Bytes::from_static(MARKER_BODY)).await.map_err(Error::from);
    if let Err(e) = written.and_then(|()| Ok(sh.index.set(key, State::Unlinked, &rec)?)) {
        // a volume that wrote a marker and then failed (reset, killed) is refused this
        // DELETE (just marked down): the server retries it ([`unmark`])
        if ctx.client.delete_all(&topo, &markers).await.is_ok() {
            let _ = sh.index.forget_marking(key);
        } else {
            sh.stray_markers.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_vec());
        }
        return Err(e);
    }
    // left behind (the index failing just now), the note only has the next start look at
    // the key again: unlinked by then, it is forgotten
    let _ = sh.index.forget_marking(key);
    ctx.durable().await?;
    Ok(rec)
}

/// Deletes the unlink markers failed UNLINKs may have left beside keys still live
/// ([`Shared::stray_markers`]), once the volumes let it; a key unlinked since, or gone,
/// keeps what it has. Returns how many keys were cleaned, and the last failure.
///
/// [`Shared::stray_markers`]: super::Shared
pub async fn unmark(ctx: &Ctx) -> (usize, Option<Error>) {
    sweep(ctx, &ctx.shared.stray_markers, async |_claim, key, found| {
        let acted = match found {
            Some((State::Live, rec)) => {
                ctx.topo().all_up(&rec.volumes)?;
                // the markers may be gone already (an offline verify -repair, a crash before
                // any was written): asked first, and only a marker found counts
                let markers = targets(&rec.volumes, &format!("{MARKER_DIR}{}", key_path(key)));
                ctx.client.delete_present(&ctx.topo(), &markers).await? > 0
            }
            _ => false,
        };
        ctx.shared.index.forget_marking(key)?;
        Ok(acted)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every placeholder under `unlinked` is found, page by page, whatever the page size,
    /// and nothing else: not an unlinked value, not a live key.
    #[test]
    fn placeholders_are_found_page_by_page() {
        let p = std::env::temp_dir().join(format!("mkv-remove-placeholders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let idx = Index::open(&p).unwrap();
        let value = Record { volumes: vec!["a:1".into()], size: 3, mtime: 5, ..Record::default() };
        let mut want = Vec::new();
        for i in 0..10u8 {
            let key = vec![b'/', b'k', b'0' + i];
            match i % 3 {
                0 => {
                    idx.set(&key, State::Unlinked, &Record::placeholder(vec!["a:1".into()])).unwrap();
                    want.push(key);
                }
                1 => idx.set(&key, State::Unlinked, &value).unwrap(),
                _ => idx.set(&key, State::Live, &value).unwrap(),
            }
        }
        for n in [1, 2, 3, 7, 100] {
            let (mut got, mut after, mut pages) = (Vec::new(), None, 0);
            loop {
                let (found, last) = placeholders(&idx, after.as_deref(), n).unwrap();
                got.extend(found);
                pages += 1;
                assert!(pages <= 11, "page size {n}: no end");
                match last {
                    Some(l) => after = Some(l),
                    None => break,
                }
            }
            assert_eq!(got, want, "page size {n}");
        }
        drop(idx);
        std::fs::remove_dir_all(&p).unwrap();
    }
}
