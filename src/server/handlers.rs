//! The API: each handler speaks in index and volume operations and, on success, writes its
//! status line and headers; errors are answered by the caller through [`ApiError::status`].

use crate::md5::Md5;
use bytes::Bytes;
use futures_util::future::join;

use super::{cache::Answer, conn::Req, ApiError, Ctx};
use crate::{
    http::{response, Body, Conn, Framing, Method},
    index::State,
    placement::{self, targets, MARKER_DIR},
    record::Record,
    volume::{self, Topology},
};

/// A body up to this size is read whole and sent to the replicas in one write each
/// (retried on a fresh connection if a pooled one was stale); larger ones are streamed.
const SMALL_BODY: usize = 1 << 20;
/// Largest piece of a streamed body read from the client and sent on to the replicas.
const CHUNK: usize = 1 << 20;
/// A piece larger than this is hashed on the blocking pool, not on the runtime thread: MD5
/// runs at ~600-700 MiB/s here, so 1 MiB inline would stall every other connection ~1.5 ms.
const HASH_INLINE: usize = 64 << 10;
/// Pieces of a streamed body waiting for the MD5 before the reading pauses (1 MiB each).
const HASH_QUEUE: usize = 4;
/// Most pieces one job on the pool hashes before it lets other PUTs' jobs have the thread.
const HASH_BATCH: usize = 64;
/// Keys written into a listing between two yields to the other connections of the thread.
const LIST_BATCH: usize = 1024;

/// Routes one request. Returns the body of a successful answer (empty for most).
pub async fn handle(ctx: &Ctx, conn: &mut Conn, req: &mut Req, body: &mut Body) -> Result<Vec<u8>, ApiError> {
    match req.method {
        Some(Method::Get | Method::Head) if req.list.is_some() => list(ctx, conn, req).await,
        Some(Method::List) => list(ctx, conn, req).await,
        Some(Method::Get | Method::Head) => get(ctx, conn, req),
        Some(Method::Put) => put(ctx, conn, req, body).await,
        Some(Method::Delete) => delete(ctx, conn, &req.key).await,
        Some(Method::Unlink) => unlink(ctx, conn, &req.key).await,
        Some(Method::Rebalance) => crate::rebalance::one(ctx, &req.key, false).await.map(|_| {
            response::start(&mut conn.out, 204);
            Vec::new()
        }),
        Some(Method::Volumes) => volumes(ctx, conn, req),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// The hot path: the key's answer from this thread's cache, or one pinned point read; a
/// redirect to the first replica on a live volume.
fn get(ctx: &Ctx, conn: &mut Conn, req: &mut Req) -> Result<Vec<u8>, ApiError> {
    let sh = &ctx.shared;
    let (gen, topo) = ctx.topo_gen();
    // read before the index, so a write that lands in between makes the entry stale
    let seq = sh.index.seq(&req.key);
    let mut cache = ctx.cache.borrow_mut();
    // a hit answers from this one lookup
    if let Some(answer) = cache.get(&req.key, seq, gen) {
        return redirect(&mut conn.out, answer);
    }
    let found = if cache.is_missing(&req.key, seq) { None } else { sh.index.get_pinned(State::Live, &req.key)? };
    let Some(pinned) = found else {
        cache.note_missing(&req.key, seq);
        return match &sh.cfg.fallback {
            Some(fb) => {
                response::start(&mut conn.out, 302);
                response::header(&mut conn.out, "Location", &[b"http://", fb.as_bytes(), &req.raw_path]);
                Ok(Vec::new())
            }
            None => Err(ApiError::NotFound),
        };
    };
    let answer = cache.fill(&req.key, pinned.record()?, &topo, seq, gen);
    redirect(&mut conn.out, answer)
}

/// The `302` of a GET: the first replica on a live volume, and the key's metadata.
fn redirect(out: &mut Vec<u8>, answer: &Answer) -> Result<Vec<u8>, ApiError> {
    let replica = answer.live_replica().ok_or(ApiError::NoLiveReplica)?;
    response::start(out, 302);
    // empty unless -sign-redirects: then `?md5=..&expires=..` for a SIGN=1 volume
    let signed = volume::secret::redirect_query(replica, &answer.path);
    response::header(out, "Location", &[b"http://", replica.as_bytes(), answer.path.as_bytes(), signed.as_bytes()]);
    if let Some(m) = &answer.md5_hex {
        response::header(out, "Content-Md5", &[m]);
    }
    response::header(out, "Key-Volumes", &[answer.key_volumes.as_bytes()]);
    response::header(out, "Key-Balance", &[if answer.balanced { b"balanced" } else { b"unbalanced" }]);
    Ok(Vec::new())
}

/// PUT: claim the key, record it as unlinked (a crash leaves a listed, deletable trace),
/// write every replica, then one batch makes it live.
async fn put(ctx: &Ctx, conn: &mut Conn, req: &Req, body: &mut Body) -> Result<Vec<u8>, ApiError> {
    let sh = &ctx.shared;
    let key = &req.key[..];
    if !placement::key_fits(key) {
        return Err(ApiError::KeyTooLong);
    }
    if !placement::key_storable(key) {
        return Err(ApiError::BadQuery("this key's file name would end in '/' (its base64 does): add or drop a byte"));
    }
    if body.framing() == Framing::None {
        return Err(ApiError::EmptyBody);
    }
    let claim = sh.locks.try_lock(key).ok_or(ApiError::InFlight)?;
    let prior = sh.index.get(key)?;
    let prior_unlinked = match prior {
        Some((State::Live, _)) => return Err(ApiError::Exists),
        Some((State::Unlinked, r)) => Some(r),
        None => None,
    };
    let cfg = &sh.cfg;
    let topo = ctx.topo();
    let replicas = topo.place(key);
    if let Some(down) = replicas.iter().find(|r| !topo.is_up(r)) {
        return Err(volume::Error::Down(placement::server_of(down).to_string()).into());
    }
    let path = placement::key_path(key);
    let wait = cfg.limits.body_timeout;

    let mut first = Vec::new();
    while first.len() < SMALL_BODY {
        match conn.body_chunk(body, SMALL_BODY - first.len(), wait).await? {
            Some(c) => first.extend_from_slice(&c),
            None => break,
        }
    }
    if first.is_empty() {
        return Err(ApiError::EmptyBody);
    }

    // the pending record also names the replicas of an unlinked value this PUT replaces,
    // so that nothing is left unlisted if it fails half way
    let mut pending = Record { volumes: replicas.clone(), size: 0, md5: None };
    let old_only: Vec<String> = prior_unlinked
        .as_ref()
        .map(|r| r.volumes.iter().filter(|v| !replicas.contains(v)).cloned().collect())
        .unwrap_or_default();
    pending.volumes.extend(old_only.iter().cloned());
    sh.index.set(key, State::Unlinked, &pending)?;

    let to = targets(&replicas, &path);
    let mut md5 = cfg.md5sum.then(Md5::new);
    let first = Bytes::from(first);
    let sent = if body.is_done() {
        let (sent, hashed) = join(ctx.client.put_all(&topo, &to, &first), hash(md5.take(), first.clone())).await;
        hashed.and_then(|h| {
            md5 = h;
            sent.map_err(ApiError::from)
        })
    } else {
        stream_rest(ctx, &topo, conn, body, &to, first, &mut md5).await
    };
    if let Err(e) = sent {
        abandon(ctx, &topo, key, &pending, &path, prior_unlinked.is_some()).await;
        return Err(e);
    }
    if let Some(old) = &prior_unlinked {
        // the replaced value's markers and replicas elsewhere: best effort, the new value is safe
        let mut gone = targets(&old.volumes, &format!("{MARKER_DIR}{path}"));
        gone.extend(targets(&old_only, &path));
        if let Err(e) = ctx.client.delete_all(&topo, &gone).await {
            eprintln!("mkv: PUT {}: could not remove the replaced value's files: {e}", String::from_utf8_lossy(key));
        }
    }
    let rec = Record { volumes: replicas, size: body.received(), md5: md5.map(|h| h.finalize()) };
    sh.index.set(key, State::Live, &rec)?;
    drop(claim);
    if !std::rc::Rc::ptr_eq(&topo, &ctx.topo()) {
        // the volume list changed while this PUT ran (an online rebalance): an online
        // rebalance may have listed keys before this one existed, so move it now
        if let Err(e) = crate::rebalance::one(ctx, key, false).await {
            eprintln!("mkv: PUT {}: written, but not moved to the new volumes: {e}", String::from_utf8_lossy(key));
        }
    }
    response::start(&mut conn.out, 201);
    Ok(Vec::new())
}

/// Adds `piece` to the MD5 (if one is kept), on the blocking pool when the piece is large.
async fn hash(md5: Option<Md5>, piece: Bytes) -> Result<Option<Md5>, ApiError> {
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
async fn hash_all(mut md5: Md5, pieces: flume::Receiver<Bytes>) -> Result<Md5, ApiError> {
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
async fn on_pool<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, ApiError> {
    monoio::spawn_blocking(f).await.map_err(|_| ApiError::Internal("the blocking thread pool dropped a job"))
}

/// Streams a large body: each piece read from the client goes to every replica at once.
async fn stream_rest(
    ctx: &Ctx,
    topo: &Topology,
    conn: &mut Conn,
    body: &mut Body,
    to: &[(String, String)],
    first: Bytes,
    md5: &mut Option<Md5>,
) -> Result<(), ApiError> {
    let len = match body.framing() {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let wait = ctx.shared.cfg.limits.body_timeout;
    let mut up = ctx.client.upload(topo, to, len).await?;
    // three stages run side by side, each at its own pace: reading the next piece from the
    // client, the replicas' writers (queued in the client) and the MD5 (queued here, hashed
    // on the blocking pool); a full queue pauses the reading
    let (hash_tx, hash_rx) = flume::bounded::<Bytes>(HASH_QUEUE);
    let hasher = md5.take().map(|h| monoio::spawn(hash_all(h, hash_rx)));
    let mut piece = first;
    loop {
        if hasher.is_some() && hash_tx.send_async(piece.clone()).await.is_err() {
            return Err(ApiError::Internal("the hashing task stopped"));
        }
        let (sent, next) = join(ctx.client.upload_chunk(&mut up, piece), conn.body_chunk(body, CHUNK, wait)).await;
        sent?;
        match next? {
            Some(chunk) => piece = chunk,
            None => break,
        }
    }
    drop(hash_tx);
    if let Some(h) = hasher {
        *md5 = Some(h.await?);
    }
    ctx.client.upload_finish(up).await?;
    Ok(())
}

/// After a failed PUT: remove what was written; if that fails too, the key stays listed
/// under `?unlinked`, where a DELETE can finish the job.
async fn abandon(ctx: &Ctx, topo: &Topology, key: &[u8], pending: &Record, path: &str, had_markers: bool) {
    let mut gone = targets(&pending.volumes, path);
    if had_markers {
        gone.extend(targets(&pending.volumes, &format!("{MARKER_DIR}{path}")));
    }
    match ctx.client.delete_all(topo, &gone).await {
        Ok(()) => {
            if let Err(e) = ctx.shared.index.remove(key) {
                eprintln!("mkv: PUT {}: {e}", String::from_utf8_lossy(key));
            }
        }
        Err(e) => eprintln!(
            "mkv: PUT {} failed and its replicas could not be removed ({e}); it is listed under ?unlinked",
            String::from_utf8_lossy(key)
        ),
    }
}

/// DELETE: unlinked first (so a failure leaves it listed), then the replicas, then the record.
async fn delete(ctx: &Ctx, conn: &mut Conn, key: &[u8]) -> Result<Vec<u8>, ApiError> {
    let sh = &ctx.shared;
    let _claim = sh.locks.try_lock(key).ok_or(ApiError::InFlight)?;
    let (state, rec) = sh.index.get(key)?.ok_or(ApiError::NotFound)?;
    if sh.cfg.protect && state == State::Live {
        return Err(ApiError::Protected);
    }
    if state == State::Live {
        sh.index.set(key, State::Unlinked, &rec)?;
    }
    let path = placement::key_path(key);
    let mut gone = targets(&rec.volumes, &path);
    if state == State::Unlinked {
        gone.extend(targets(&rec.volumes, &format!("{MARKER_DIR}{path}")));
    }
    ctx.client.delete_all(&ctx.topo(), &gone).await?;
    sh.index.remove(key)?;
    response::start(&mut conn.out, 204);
    Ok(Vec::new())
}

/// UNLINK: a marker beside each replica (so `rebuild` restores the key as unlinked), then
/// one batch moves the record to `unlinked`. The data stays.
async fn unlink(ctx: &Ctx, conn: &mut Conn, key: &[u8]) -> Result<Vec<u8>, ApiError> {
    let sh = &ctx.shared;
    let _claim = sh.locks.try_lock(key).ok_or(ApiError::InFlight)?;
    let Some(pinned) = sh.index.get_pinned(State::Live, key)? else {
        return Err(ApiError::NotFound);
    };
    let rec = pinned.record()?.to_owned();
    drop(pinned);
    let markers = targets(&rec.volumes, &format!("{MARKER_DIR}{}", placement::key_path(key)));
    let topo = ctx.topo();
    if let Err(e) = ctx.client.put_all(&topo, &markers, b"unlinked\n").await {
        let _ = ctx.client.delete_all(&topo, &markers).await;
        return Err(e.into());
    }
    sh.index.set(key, State::Unlinked, &rec)?;
    response::start(&mut conn.out, 204);
    Ok(Vec::new())
}

/// `VOLUMES /`: the volume list in force; with `?volumes=a,b,c[&replicas=N]`, switch to it
/// (what `mkv rebalance -online` does first).
fn volumes(ctx: &Ctx, conn: &mut Conn, req: &Req) -> Result<Vec<u8>, ApiError> {
    if let Some(list) = &req.volumes {
        let topo = ctx.topo();
        let replicas = match &req.replicas {
            None => topo.replicas,
            Some(Ok(n)) => *n,
            Some(Err(())) => return Err(ApiError::BadQuery("replicas must be a positive integer")),
        };
        let list: Vec<String> = list.split(',').filter(|v| !v.is_empty()).map(str::to_string).collect();
        ctx.shared.set_volumes(&list, replicas).map_err(ApiError::BadConfig)?;
    }
    let topo = ctx.shared.topology();
    let body = serde_json::json!({
        "volumes": topo.volumes,
        "replicas": topo.replicas,
        "subvolumes": topo.subvolumes,
    });
    response::start(&mut conn.out, 200);
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(body.to_string().into_bytes())
}

/// `?list` / `?unlinked`: keys under the prefix, sorted, paged by `start` and `limit`.
async fn list(ctx: &Ctx, conn: &mut Conn, req: &Req) -> Result<Vec<u8>, ApiError> {
    let limit = match req.limit {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(())) => return Err(ApiError::BadQuery("limit must be a non-negative integer")),
    };
    let state = req.list.unwrap_or(State::Live);
    let mut keys = Vec::with_capacity(256);
    let mut next: Option<Vec<u8>> = None;
    let mut scan = ctx.shared.index.scan(state, &req.key, &req.start);
    let mut n = 0usize;
    while let Some((k, _)) = scan.next() {
        if limit > 0 && n == limit {
            next = Some(k.to_vec());
            break;
        }
        if n > 0 {
            keys.push(b',');
        }
        json_string(&mut keys, k);
        n += 1;
        if n % LIST_BATCH == 0 {
            // a long listing must not stall the thread's other connections
            yield_now().await;
        }
    }
    scan.status()?;
    let mut out = Vec::with_capacity(keys.len() + 32);
    out.extend_from_slice(b"{\"next\":");
    json_string(&mut out, next.as_deref().unwrap_or(b""));
    out.extend_from_slice(b",\"keys\":[");
    out.extend_from_slice(&keys);
    out.extend_from_slice(b"]}");
    response::start(&mut conn.out, 200);
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(out)
}

/// A JSON string of `s`; bytes that are not UTF-8 become U+FFFD.
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Lets the runtime run other tasks before continuing (monoio has no `yield_now`).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings() {
        let mut out = vec![];
        json_string(&mut out, b"/a \"b\"\\\n\xff");
        assert_eq!(String::from_utf8(out).unwrap(), "\"/a \\\"b\\\"\\\\\\u000a\u{fffd}\"");
    }
}
