//! The native API: each handler speaks in store operations and, on success, writes its
//! status line and headers; errors are answered by the caller through [`ApiError::status`].

use bytes::Bytes;

use super::{admin, cache::Answer, conn::Req, list, ApiError, Local, Reply};
use crate::{
    http::{self, response, Body, Conn, Framing, Method},
    index::State,
    metrics::Block,
    store::{
        relocate, remove,
        write::{self, Failed, PutOpts, Source},
    },
};

/// Routes one request.
/// What the native API's port takes (S3's `POST`s aside): a `405`'s `Allow`.
pub const KEY_METHODS: &str = "GET, HEAD, PUT, DELETE, UNLINK, LIST, REBALANCE, VOLUMES, REPAIR, SNAPSHOT";

pub async fn handle(local: &Local, conn: &mut Conn, req: &mut Req, body: &mut Body) -> Result<Reply, ApiError> {
    let ctx = &local.ctx;
    match req.method {
        Some(Method::Get | Method::Head) if req.list.is_some() => list::list(local, conn, req).await,
        Some(Method::Get | Method::Head) if req.pending => list::pending(local, conn, req),
        Some(Method::Get | Method::Head) if req.parts => list::parts(local, conn, req),
        Some(Method::List) => list::list(local, conn, req).await,
        Some(Method::Get | Method::Head) => get(local, conn, req),
        Some(Method::Put) => put(local, conn, req, body).await,
        Some(Method::Delete) => {
            remove::delete(ctx, &req.key, ctx.shared.cfg.protect).await?;
            empty(conn, 204)
        }
        Some(Method::Unlink) => {
            remove::unlink(ctx, &req.key).await?;
            empty(conn, 204)
        }
        Some(Method::Rebalance) => {
            let outcome = relocate::one(ctx, &req.key, false).await?;
            response::start(&mut conn.out, 204);
            // what `rebalance -online` tallies, as the offline one does
            response::header(&mut conn.out, "Key-Rebalance", &[outcome.word().as_bytes()]);
            Ok(Reply::Body(Vec::new()))
        }
        Some(Method::Volumes | Method::Repair | Method::Snapshot) => admin::method(local, conn, req).await,
        _ => Err(ApiError::MethodNotAllowed(KEY_METHODS)),
    }
}

/// An answer with a status line and no body.
pub fn empty(conn: &mut Conn, status: u16) -> Result<Reply, ApiError> {
    response::start(&mut conn.out, status);
    Ok(Reply::Body(Vec::new()))
}

/// The hot path: the key's answer from this thread's cache, or one pinned point read; a
/// redirect to a replica on a live volume.
fn get(local: &Local, conn: &mut Conn, req: &mut Req) -> Result<Reply, ApiError> {
    let sh = &local.ctx.shared;
    let (gen, topo) = local.ctx.topo_gen();
    // read before the index, so a write that lands in between makes the entry stale
    let seq = sh.index.seq(&req.key);
    let mut cache = local.cache.borrow_mut();
    // a hit answers from this one lookup
    cache.turn = cache.turn.wrapping_add(1);
    let turn = cache.turn;
    if let Some(answer) = cache.get(&req.key, seq, gen) {
        Block::add(&local.ctx.metrics.cache_hits, 1);
        return redirect(&mut conn.out, answer, turn);
    }
    if let Some(answer) = cache.revive(&req.key, seq, gen) {
        Block::add(&local.ctx.metrics.cache_hits, 1);
        return redirect(&mut conn.out, answer, turn);
    }
    // a key remembered as missing is answered from the cache too
    let known_missing = cache.is_missing(&req.key, seq);
    let m = &local.ctx.metrics;
    Block::add(if known_missing { &m.cache_hits } else { &m.cache_misses }, 1);
    let found = if known_missing { None } else { sh.index.get_pinned(State::Live, &req.key)? };
    let Some(pinned) = found else {
        cache.note_missing(&req.key, seq);
        return match &sh.cfg.fallback {
            Some(fb) => {
                response::start(&mut conn.out, 302);
                response::header(&mut conn.out, "Location", &[b"http://", fb.as_bytes(), &req.raw_path]);
                Ok(Reply::Body(Vec::new()))
            }
            None => Err(crate::store::Error::NotFound.into()),
        };
    };
    let answer = cache.fill(&req.key, pinned.record()?, &topo, seq, gen);
    redirect(&mut conn.out, answer, turn)
}

/// The `302` of a GET: a replica on a live volume (the next in turn: reads spread over the
/// replicas), and the key's metadata.
fn redirect(out: &mut Vec<u8>, answer: &Answer, turn: usize) -> Result<Reply, ApiError> {
    let replica = answer.live_replica(turn).ok_or(crate::store::Error::NoLiveReplica)?;
    response::start(out, 302);
    // empty unless -sign-redirects: then `?md5=..&expires=..` for a SIGN=1 volume
    let signed = crate::volume::secret::redirect_query(replica, answer.path());
    response::header(out, "Location", &[b"http://", replica.as_bytes(), answer.path().as_bytes(), signed.as_bytes()]);
    if let Some(m) = &answer.md5 {
        response::header(out, "Content-Md5", &[&hex(m)]);
    }
    response::header(out, "Key-Volumes", &[answer.key_volumes().as_bytes()]);
    response::header(out, "Key-Balance", &[if answer.balanced { b"balanced" } else { b"unbalanced" }]);
    Ok(Reply::Body(Vec::new()))
}

/// An MD5 in lower-case hex, on the stack.
fn hex(m: &[u8; 16]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in m.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
}

/// A client's request body as a store [`Source`].
pub struct ClientBody<'a> {
    pub conn: &'a mut Conn,
    pub body: &'a mut Body,
}

impl Source for ClientBody<'_> {
    type Error = http::Error;

    async fn next(&mut self, max: usize) -> Result<Option<Bytes>, http::Error> {
        self.conn.body_chunk(self.body, max).await
    }

    fn len(&self) -> Option<u64> {
        match self.body.framing() {
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }
}

/// PUT: every replica written, then `201`.
async fn put(local: &Local, conn: &mut Conn, req: &Req, body: &mut Body) -> Result<Reply, ApiError> {
    let ctx = &local.ctx;
    if body.framing() == Framing::None {
        // refused before anything is claimed or read
        write::check_key(&req.key)?;
        return Err(crate::store::Error::EmptyBody.into());
    }
    let opts = PutOpts {
        replace_live: false,
        allow_empty: false,
        md5: ctx.shared.cfg.md5sum,
        meta: Vec::new(),
        expect_md5: None,
    };
    let in_flight = &ctx.metrics.puts_in_flight;
    in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let r = write::put(ctx, &req.key, &mut ClientBody { conn, body }, &opts).await;
    in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    match r {
        Ok(_) => empty(conn, 201),
        Err(Failed::Store(e)) => Err(e.into()),
        Err(Failed::Source(e)) => Err(e.into()),
    }
}
