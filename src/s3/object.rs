//! Objects: PutObject, GetObject and HeadObject (the bytes streamed through the master, as
//! S3 clients do not follow redirects), DeleteObject and CopyObject, each one store
//! operation on the native key `/BUCKET/KEY`.

use std::time::Duration;

use super::{
    body::S3Body,
    error::S3Error,
    meta::{Conditions, Metadata},
    payload::Payload,
    request::{Object, Read},
    serve::{error_answer, ok, patiently, start, store_error, Answer, Failure, Req},
    sigv4::Verified,
    stored::{etag, Stored},
    xml,
};
use crate::{
    http::{response, Body, Conn, Reply},
    index::State,
    metrics::Block,
    pipe::Pipe,
    record::Record,
    store::{
        self,
        read::{self, Opened, Reader},
        remove,
        write::{self, Failed, PutOpts},
        Ctx, KeyGuard,
    },
    volume::Download,
};
use base64::Engine;

/// How long a write waits for another write of the same key to end before `503 SlowDown`.
pub const BUSY_WAIT: Duration = Duration::from_secs(5);
/// Largest piece of a value read from a replica and written to the client at once.
const PIECE: usize = 256 << 10;
/// Bodies longer than this are spliced from the volume to the client (below it, the pipe's
/// two extra system calls cost more than the copy saves).
const SPLICE_FROM: u64 = 64 << 10;

/// Claims `key` for a write under its conditions (`If-Match`, `If-None-Match`): waits a
/// little while another write of it is in flight (S3's last writer wins; the native `409`
/// is for clients that chose to race), but not when the write is conditional
/// (`409 ConditionalRequestConflict`, which S3 clients retry). The conditions are checked
/// under the claim, so no other write can land between the check and this one.
pub async fn claim_for_write<'a>(
    ctx: &'a Ctx,
    key: &[u8],
    write_if: &Conditions,
    missing_ok: bool,
) -> Result<KeyGuard<'a>, Failure> {
    claim_checked(ctx, key, write_if, missing_ok, false).await
}

/// [`claim_for_write`]; for a delete, which takes a replacement left pending with it
/// ([`remove::delete_claimed`]), one whose volume is out of reach is not settled first
/// unless conditions need the value it makes.
async fn claim_checked<'a>(
    ctx: &'a Ctx,
    key: &[u8],
    write_if: &Conditions,
    missing_ok: bool,
    deleting: bool,
) -> Result<KeyGuard<'a>, Failure> {
    let wait = if write_if.is_empty() { BUSY_WAIT } else { Duration::ZERO };
    let held = claim_waiting(ctx, key, wait).await.map_err(|f| conflict(f, write_if))?;
    // the conditions hold against the value a replacement left pending makes
    match write::settle_pending(ctx, &held, key).await {
        Err(store::Error::Volume(e)) if deleting && write_if.is_empty() && e.unreachable() => {}
        r => r?,
    }
    check_write(ctx, key, write_if, missing_ok)?;
    Ok(held)
}

/// Claims `key` (an object or an upload's lock name), waiting up to `wait` for its holder
/// to finish: `503 SlowDown` after.
pub async fn claim_waiting<'a>(ctx: &'a Ctx, key: &[u8], wait: Duration) -> Result<KeyGuard<'a>, Failure> {
    Ok(ctx.claim_within(key, wait).await?)
}

/// DeleteObject of `key` (also each of DeleteObjects) under its conditions, claimed as
/// writes are ([`claim_for_write`]; S3 has no `409` for a plain delete: the client would
/// see a `503 SlowDown`). Deleting what is not there succeeds, unless `missing_ok` is false
/// and an `If-Match` asked for the object (`404 NoSuchKey`, as DeleteObject answers).
///
/// S3 takes every delete: one that could not reach a volume holding a replica has left
/// the key a placeholder under `unlinked` (no GET or listing finds it), whose files the
/// master deletes once the volume is back ([`remove::finish_later`]); a `503` would be
/// retried by the client and then given up on, the object gone all the same. Returns the
/// volume error such a delete met (for the caller's log line), unless none. Still `503`
/// when no volume of the key took its unlink marker (all of them out of reach).
pub async fn delete_if(
    ctx: &Ctx,
    key: &[u8],
    write_if: &Conditions,
    missing_ok: bool,
) -> Result<Option<crate::volume::Error>, Failure> {
    let held = claim_checked(ctx, key, write_if, missing_ok, true).await?;
    match remove::delete_claimed(ctx, held, key, ctx.shared.cfg.protect).await {
        Ok(()) | Err(store::Error::NotFound) => Ok(None),
        Err(store::Error::Volume(e)) if e.unreachable() => match remove::finish_later(ctx, key).await? {
            true => Ok(Some(e)),
            false => Err(store::Error::Volume(e).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Maps a failed write to its S3 answer: a source failure says what was wrong with the body.
pub fn write_failure(e: Failed<S3Error>, broken: bool) -> Failure {
    match e {
        Failed::Store(e) => Failure { error: store_error(e), close: broken },
        Failed::Source(e) => Failure { error: e, close: broken },
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn put(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    body: &mut Body,
    obj: &Object,
    meta: Metadata,
    conditions: &Conditions,
    verified: Verified,
) -> Result<Answer, Failure> {
    let key = obj.native_key();
    let payload = Payload::new(&req.headers, verified, false)?;
    let held = claim_for_write(ctx, &key, conditions, false).await?;
    let stored = Stored { etag: None, headers: meta.headers };
    let opts = PutOpts { replace_live: true, allow_empty: true, md5: true, meta: stored.encode(), expect_md5: None };
    let mut src = S3Body::new(conn, body, payload);
    let r = write::put_claimed(ctx, held, &key, &mut src, &opts).await;
    let (broken, finished) = (src.broken, src.finished.take());
    let rec = r.map_err(|e| write_failure(e, broken))?;
    start(conn, 200, &req.request_id);
    let tag = format!("\"{}\"", etag(&rec, &Stored::default()));
    response::header(&mut conn.out, "ETag", &[tag.as_bytes()]);
    if let Some(sum) = finished.and_then(|f| f.checksum) {
        response::header(&mut conn.out, sum.algorithm().header(), &[sum.to_base64().as_bytes()]);
    }
    Ok(Answer { reply: Reply::Body(Vec::new()), close: false })
}

/// A conditional write refused because another write of its key was in flight says so.
pub fn conflict(mut f: Failure, write_if: &Conditions) -> Failure {
    if !write_if.is_empty() && f.error == S3Error::SlowDown {
        f.error = S3Error::ConditionalRequestConflict;
    }
    f
}

/// A write's own preconditions (`If-Match`, `If-None-Match: *`, ...) against the object it
/// would replace or delete: `412`. `If-Match` of a missing object is `404 NoSuchKey`, but for
/// a delete (`missing_ok`), which S3 answers `204` then.
fn check_write(ctx: &Ctx, key: &[u8], conditions: &Conditions, missing_ok: bool) -> Result<(), Failure> {
    if conditions.is_empty() {
        return Ok(());
    }
    match live(ctx, key)? {
        Some((rec, stored)) => Ok(conditions.check(&etag(&rec, &stored), (rec.mtime / 1000) as i64, false)?),
        None if conditions.if_match.is_some() && !missing_ok => Err(S3Error::NoSuchKey.into()),
        None => Ok(()),
    }
}

/// The live record of `key` and what S3 stored with it.
fn live(ctx: &Ctx, key: &[u8]) -> Result<Option<(Record, Stored)>, Failure> {
    let index = &ctx.shared.index;
    let found = index.get_pinned(State::Live, key).map_err(store::Error::from)?;
    let Some(p) = found else { return Ok(None) };
    let rec = p.record().map_err(store::Error::from)?.to_owned();
    let stored = Stored::decode(&rec.meta);
    Ok(Some((rec, stored)))
}

/// The headers of a GET or HEAD answer that describe the object.
fn describe(out: &mut Vec<u8>, rec: &Record, stored: &Stored, read: &Read) {
    let tag = format!("\"{}\"", etag(rec, stored));
    response::header(out, "ETag", &[tag.as_bytes()]);
    response::header(out, "Last-Modified", &[crate::dates::http_date((rec.mtime / 1000) as i64).as_bytes()]);
    response::header(out, "Accept-Ranges", &[b"bytes"]);
    let overridden = |name: &str| read.overrides.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if stored.headers.iter().all(|(n, _)| n != "content-type") && !overridden("content-type") {
        response::header(out, "Content-Type", &[b"binary/octet-stream"]);
    }
    for (name, value) in stored.headers.iter().filter(|(n, _)| !overridden(n)) {
        if name.starts_with("x-amz-meta-") && !value.is_ascii() {
            // as S3 answers a user value outside US-ASCII: RFC 2047, mail-safe (raw UTF-8 in
            // a header is read as Latin-1: boto3 gave 'hÃ©llo')
            let b64 = base64::engine::general_purpose::STANDARD.encode(value);
            response::header(out, name, &[b"=?UTF-8?B?", b64.as_bytes(), b"?="]);
        } else {
            response::header(out, name, &[value]);
        }
    }
    for (name, value) in &read.overrides {
        response::header(out, name, &[value]);
    }
}

/// Ends an answer's head with its length (and a close where the client asked).
fn end_head(out: &mut Vec<u8>, len: u64, keep: bool) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(if keep { b"\r\n\r\n" as &[u8] } else { b"\r\nConnection: close\r\n\r\n" });
}

/// `304` for a read whose `If-None-Match`/`If-Modified-Since` says the client has it. No
/// `Content-Length`: a cache refreshing its copy's headers from a 304 would take a `0` for
/// the object's (RFC 9110 §8.6 allows only the 200's own).
fn not_modified(conn: &mut Conn, req: &Req, rec: &Record, stored: &Stored) -> Answer {
    start(conn, 304, &req.request_id);
    let tag = format!("\"{}\"", etag(rec, stored));
    response::header(&mut conn.out, "ETag", &[tag.as_bytes()]);
    response::header(&mut conn.out, "Last-Modified", &[crate::dates::http_date((rec.mtime / 1000) as i64).as_bytes()]);
    conn.out.extend_from_slice(if req.keep_alive { b"\r\n" as &[u8] } else { b"Connection: close\r\n\r\n" });
    Answer { reply: Reply::Streamed { status: 304, keep: req.keep_alive }, close: false }
}

/// `416` for a range no byte of which exists, with the `Content-Range: bytes */SIZE` that
/// tells a resuming client how much there is (RFC 9110 §15.5.17).
fn unsatisfiable(conn: &mut Conn, req: &Req, size: u64) -> Answer {
    let answer = error_answer(conn, req, &S3Error::InvalidRange, false);
    response::header(&mut conn.out, "Content-Range", &[format!("bytes */{size}").as_bytes()]);
    answer
}

pub fn head(ctx: &Ctx, conn: &mut Conn, req: &Req, obj: &Object, read: &Read) -> Result<Answer, Failure> {
    let (rec, stored) = live(ctx, &obj.native_key())?.ok_or(S3Error::NoSuchKey)?;
    match read.conditions.check(&etag(&rec, &stored), (rec.mtime / 1000) as i64, true) {
        Err(S3Error::NotModified) => return Ok(not_modified(conn, req, &rec, &stored)),
        r => r?,
    }
    let range = read.range_of(&etag(&rec, &stored), (rec.mtime / 1000) as i64).map(|r| r.resolve(rec.size));
    let range = match range.transpose() {
        Err(S3Error::InvalidRange) => return Ok(unsatisfiable(conn, req, rec.size)),
        r => r?,
    };
    let (status, _) = answer_head(conn, req, &rec, &stored, read, range);
    Ok(Answer { reply: Reply::Streamed { status, keep: req.keep_alive }, close: false })
}

/// The head of a `200`/`206` read (HeadObject's and GetObject's alike): its status and the
/// body's length.
fn answer_head(
    conn: &mut Conn,
    req: &Req,
    rec: &Record,
    stored: &Stored,
    read: &Read,
    range: Option<(u64, u64)>,
) -> (u16, u64) {
    let status = if range.is_some() { 206 } else { 200 };
    start(conn, status, &req.request_id);
    describe(&mut conn.out, rec, stored, read);
    let len = match range {
        Some((a, b)) => {
            let cr = format!("bytes {a}-{b}/{}", rec.size);
            response::header(&mut conn.out, "Content-Range", &[cr.as_bytes()]);
            b - a + 1
        }
        None => rec.size,
    };
    end_head(&mut conn.out, len, req.keep_alive);
    (status, len)
}

/// What S3 says of a key that is not there: `NoSuchBucket` when its bucket is not either.
pub fn missing(ctx: &Ctx, obj: &Object) -> Failure {
    match super::bucket::must_exist(ctx, &obj.bucket) {
        Ok(()) => S3Error::NoSuchKey.into(),
        Err(e) => e,
    }
}

/// GetObject: the bytes streamed from a live replica (another is tried if one fails before
/// its first byte), `Range` and the conditional headers honoured.
pub async fn get(ctx: &Ctx, conn: &mut Conn, req: &Req<'_>, obj: &Object, read: &Read) -> Result<Answer, Failure> {
    let key = obj.native_key();
    let opened = read::open(ctx, &key, |rec| -> Result<_, Failure> {
        let stored = Stored::decode(&rec.meta);
        let (tag, modified) = (etag(rec, &stored), (rec.mtime / 1000) as i64);
        read.conditions.check(&tag, modified, true)?;
        Ok(read.range_of(&tag, modified).map(|r| r.resolve(rec.size)).transpose()?)
    })
    .await;
    let opened = match opened {
        Ok(o) => o,
        Err(Failure { error: S3Error::NotModified, .. }) => {
            let (rec, stored) = live(ctx, &key)?.ok_or(S3Error::NoSuchKey)?;
            return Ok(not_modified(conn, req, &rec, &stored));
        }
        Err(Failure { error: S3Error::NoSuchKey, .. }) => return Err(missing(ctx, obj)),
        Err(Failure { error: S3Error::InvalidRange, .. }) => {
            let (rec, _) = live(ctx, &key)?.ok_or(S3Error::NoSuchKey)?;
            return Ok(unsatisfiable(conn, req, rec.size));
        }
        Err(e) => return Err(e),
    };
    let stored = Stored::decode(&opened.rec.meta);
    let (tag, modified) = (etag(&opened.rec, &stored), (opened.rec.mtime / 1000) as i64);
    let range = read.range_of(&tag, modified).map(|r| r.resolve(opened.rec.size)).transpose()?;
    let (status, len) = answer_head(conn, req, &opened.rec, &stored, read, range);
    let Some(d) = opened.body else {
        return Ok(Answer { reply: Reply::Streamed { status, keep: req.keep_alive }, close: false });
    };
    let span = range.unwrap_or((0, opened.rec.size.saturating_sub(1)));
    let resume = read::Resume::new(ctx, &key, &opened.rec, span);
    let (sent, close) = stream(ctx, conn, d, resume, len).await;
    Block::add(&ctx.metrics.bytes_out, sent);
    Ok(Answer { reply: Reply::Streamed { status, keep: req.keep_alive && !close }, close })
}

/// Sends a read's `len` bytes as they come from the volume (the head, already in
/// `conn.out`, goes with the first piece), taking over from another replica where one
/// fails midway: the bytes sent and whether the connection must close (the client or every
/// replica failed before the end, so the length promised cannot be kept).
async fn stream(ctx: &Ctx, conn: &mut Conn, mut d: Download, mut resume: read::Resume<'_>, len: u64) -> (u64, bool) {
    let mut sent = 0u64;
    // None: not tried yet; Some(None): no pipe to be had (out of fds or pipe pages), copy
    let mut pipe: Option<Option<Pipe>> = None;
    let close = loop {
        if d.can_splice() && len > SPLICE_FROM {
            // the rest goes socket to socket through a pipe: the bytes never enter this
            // process (copying them in and out cost the master ~0.7 ms per MiB)
            if let Some(p) = pipe.get_or_insert_with(|| Pipe::take().ok()).as_mut() {
                if !conn.out.is_empty() && conn.flush().await.is_err() {
                    break true;
                }
                match ctx.client.splice_chunk(&mut d, p, p.cap).await {
                    Ok(Some(n)) => {
                        sent += n as u64;
                        resume.advance(n as u64);
                        if conn.splice_out(p).await.is_err() {
                            break true;
                        }
                        continue;
                    }
                    Ok(None) => break sent != len,
                    Err(_) => match resume.take_over().await {
                        Some(next) => {
                            d = next;
                            continue;
                        }
                        None => break true,
                    },
                }
            }
        }
        match ctx.client.next_chunk(&mut d, PIECE).await {
            Ok(Some(piece)) => {
                sent += piece.len() as u64;
                resume.advance(piece.len() as u64);
                if !conn.out.is_empty() && conn.flush().await.is_err() {
                    break true;
                }
                let (r, _) = conn.write(piece).await;
                if r.is_err() {
                    break true;
                }
            }
            Ok(None) => break sent != len,
            Err(_) => match resume.take_over().await {
                Some(next) => d = next,
                None => break true,
            },
        }
    };
    if !close {
        ctx.client.finish(d);
    }
    if let Some(Some(p)) = pipe {
        p.give();
    }
    (sent, close)
}

pub async fn delete(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    obj: &Object,
    write_if: &Conditions,
) -> Result<Answer, Failure> {
    // `If-Match` on a missing object fails, as S3 answers (`*` asks "only if it exists");
    // DeleteObjects, whose ETag a listing gave, reports such a key deleted, as moto does
    if let Some(e) = delete_if(ctx, &obj.native_key(), write_if, false).await? {
        eprintln!(
            "mkv: S3 delete of {}: {e}; it is gone, its files there go once the volume is back",
            obj.native_key().escape_ascii()
        );
    }
    Ok(ok(conn, req, 204, None))
}

/// CopyObject: the source streamed from one of its replicas into the destination's
/// replicas (staged and moved into place if the destination exists). Bytes that are not
/// the source's value (a replica's rot, found by its record's MD5) are refused before the
/// destination is committed, and the copy is made again from the next replica: a damaged
/// replica was copied under a fresh ETag, which verify then took for the value.
#[allow(clippy::too_many_arguments)]
pub async fn copy(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    obj: &Object,
    source: &Object,
    meta: Option<Metadata>,
    conditions: &Conditions,
    write_if: &Conditions,
) -> Result<Answer, Failure> {
    let key = obj.native_key();
    let source_key = source.native_key();
    // the first claim and open answer before the work starts (a 412, a 404)
    let mut first =
        Some((claim_for_write(ctx, &key, write_if, false).await?, open_source(ctx, source, conditions).await?));
    let work = async {
        let mut tries = 0;
        loop {
            let (held, opened) = match first.take() {
                Some(f) => f,
                None => {
                    (claim_for_write(ctx, &key, write_if, false).await?, open_source(ctx, source, conditions).await?)
                }
            };
            let Opened { rec, body } = opened;
            let headers = match &meta {
                Some(m) => m.headers.clone(),
                None => Stored::decode(&rec.meta).headers,
            };
            let meta = Stored { etag: None, headers }.encode();
            let opts = PutOpts { replace_live: true, allow_empty: true, md5: true, meta, expect_md5: rec.md5 };
            let resume = read::Resume::new(ctx, &source_key, &rec, (0, rec.size.saturating_sub(1)));
            let mut src = Reader::new(&ctx.client, body).resuming(resume);
            match write::put_claimed(ctx, held, &key, &mut src, &opts).await {
                Err(Failed::Store(store::Error::Damaged)) if tries + 1 < rec.volumes.len() => {
                    tries += 1;
                    eprintln!(
                        "mkv: S3 copy from {}: a replica read does not hold its value (its MD5 differs); copying \
                         from the next (`mkv verify -deep -repair` mends it)",
                        source_key.escape_ascii()
                    );
                }
                Err(Failed::Store(e)) => return Err(Failure::from(e)),
                Err(Failed::Source(_)) => return Err(S3Error::InternalError("reading the copy source failed").into()),
                Ok(rec) => return Ok(xml::copy_object_result(&etag(&rec, &Stored::default()), rec.mtime as i64)),
            }
        }
    };
    patiently(ctx, conn, req, work).await
}

/// Opens a copy's source for reading whole, its preconditions checked.
async fn open_source(ctx: &Ctx, source: &Object, conditions: &Conditions) -> Result<Opened, Failure> {
    read::open(ctx, &source.native_key(), |rec| -> Result<_, Failure> {
        let stored = Stored::decode(&rec.meta);
        conditions.check(&etag(rec, &stored), (rec.mtime / 1000) as i64, false)?;
        Ok(None)
    })
    .await
    .map_err(|e| match e.error {
        S3Error::NoSuchKey => missing(ctx, source),
        _ => e,
    })
}
