//! `?list` and `?unlinked`: keys under a prefix, byte-wise sorted, paged by `start` and
//! `limit`, streamed in bounded memory however many keys there are.
//!
//! A listing that fits [`WHOLE`] is answered with a `Content-Length`; a longer one goes out
//! chunked, a piece at a time (with `next` after the keys, as it is known only at the end),
//! and the index is read in pages (no iterator is held while the client reads). Every key round-trips: with `encoding=url` keys and `next` are
//! percent-encoded; without it, a byte that is not part of valid UTF-8 is written as the
//! escape `\udcXX`, as Python's `surrogateescape` reads it, never replaced.

use super::{conn::Req, ApiError, Local, Reply};
use crate::{
    http::{response, Conn},
    index::State,
    metrics::Block,
    record::RecordRef,
};

/// A listing up to this size is answered whole; beyond it, it is streamed in pieces of
/// about this size.
const WHOLE: usize = 64 << 10;
/// Keys read from the index per page (then the thread's other connections get a turn).
const PAGE: usize = 1024;

pub async fn list(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    let limit = match req.limit {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(())) => return Err(ApiError::BadQuery("limit must be a non-negative integer")),
    };
    let index = &local.ctx.shared.index;
    let state = req.list.unwrap_or(State::Live);
    let mut out = Output { body: Vec::with_capacity(256), streaming: false };
    out.body.extend_from_slice(b"{\"keys\":[");
    let mut start = req.start.clone();
    let mut n = 0usize;
    let mut next: Option<Vec<u8>> = None;
    'pages: loop {
        let mut page = 0;
        {
            let mut scan = index.scan(state, &req.key, &start);
            while let Some((k, v)) = scan.next() {
                if limit > 0 && n == limit {
                    next = Some(k.to_vec());
                    break 'pages;
                }
                if page == PAGE {
                    start = k.to_vec();
                    break;
                }
                if n > 0 {
                    out.body.push(b',');
                }
                if req.records {
                    record(&mut out.body, k, v, req.url_encoded)?;
                } else {
                    string(&mut out.body, k, req.url_encoded);
                }
                n += 1;
                page += 1;
            }
            scan.status()?;
        }
        if page < PAGE {
            break;
        }
        if out.body.len() >= WHOLE {
            out.send(local, conn, req).await?;
        }
        yield_now().await;
    }
    if !out.streaming {
        // whole: in the order SPEC.md shows, `next` first
        let mut whole = Vec::with_capacity(out.body.len() + 32);
        whole.extend_from_slice(b"{\"next\":");
        string(&mut whole, next.as_deref().unwrap_or(b""), req.url_encoded);
        whole.extend_from_slice(b",");
        whole.extend_from_slice(&out.body[1..]);
        whole.extend_from_slice(b"]}");
        response::start(&mut conn.out, 200);
        response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
        return Ok(Reply::Body(whole));
    }
    // streamed: `next` is known only at the end
    out.body.extend_from_slice(b"],\"next\":");
    string(&mut out.body, next.as_deref().unwrap_or(b""), req.url_encoded);
    out.body.push(b'}');
    out.send(local, conn, req).await?;
    if req.keep_alive && !req.head_only {
        conn.out.extend_from_slice(b"0\r\n\r\n");
    }
    Ok(Reply::Streamed { status: 200, keep: req.keep_alive })
}

/// A paged answer's `limit`: at most `most`, which none (or `0`) asks for.
fn page_limit(req: &Req, most: usize) -> Result<usize, ApiError> {
    match req.limit {
        None | Some(Ok(0)) => Ok(most),
        Some(Ok(n)) => Ok(n.min(most)),
        Some(Err(())) => Err(ApiError::BadQuery("limit must be a non-negative integer")),
    }
}

/// Most entries of one `?pending` answer (the family is empty but for writes in flight).
const PENDING_PAGE: usize = 1000;

/// `GET /prefix?pending[&start=K][&limit=N]`: the replacements being written (see
/// [`crate::record::Pending`]), so that `mkv verify -online` takes neither their `_tmp/<id>`
/// files nor a half-moved replacement for orphans:
/// `{"next":"…","keys":[{"key":"…","id":"…","volumes":[…]}]}`, at most 1000 a page.
pub fn pending(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    let limit = page_limit(req, PENDING_PAGE)?;
    let index = &local.ctx.shared.index;
    let from = if req.start > req.key { &req.start } else { &req.key };
    // a point read each, on a family that holds only writes in flight
    let keys = index.pending_keys(from, limit + 1)?;
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(b"{\"keys\":[");
    let mut next: &[u8] = b"";
    let mut n = 0;
    for k in keys.iter().take_while(|k| k.starts_with(&req.key)) {
        if n == limit {
            next = k;
            break;
        }
        let Some(p) = index.pending(k)? else { continue };
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"key\":");
        string(&mut body, k, req.url_encoded);
        body.extend_from_slice(b",\"id\":");
        string(&mut body, p.id.as_bytes(), false);
        body.extend_from_slice(b",\"volumes\":[");
        for (i, v) in p.record.volumes.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            string(&mut body, v.as_bytes(), false);
        }
        body.extend_from_slice(b"]}");
        n += 1;
    }
    body.extend_from_slice(b"],\"next\":");
    string(&mut body, next, req.url_encoded);
    body.push(b'}');
    response::start(&mut conn.out, 200);
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(Reply::Body(body))
}

/// Most part records read for one `?parts` answer.
const PARTS_PAGE: usize = 1000;

/// `GET /?parts[&start=K][&limit=N]`: the S3 part files (under `_parts/`) that part records
/// name, so that `mkv verify -online` takes none of them for an orphan:
/// `{"files":["…"],"next":"…"}` (`next`, percent-encoded, is the record to go on from; empty
/// at the end), from at most 1000 records a page.
pub fn parts(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    let limit = page_limit(req, PARTS_PAGE)?;
    let (files, next) = crate::s3::multipart::part_files_page(&local.ctx.shared.index, &req.start, limit)?;
    let mut body = Vec::with_capacity(64 + files.len() * 64);
    body.extend_from_slice(b"{\"files\":[");
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        string(&mut body, f.as_bytes(), false);
    }
    body.extend_from_slice(b"],\"next\":");
    string(&mut body, next.as_deref().unwrap_or_default(), true);
    body.push(b'}');
    response::start(&mut conn.out, 200);
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(Reply::Body(body))
}

/// A listing's bytes on their way out.
struct Output {
    body: Vec<u8>,
    /// The head went out: the rest follows as chunks (or, for a client that does not keep the
    /// connection, as raw bytes until the close).
    streaming: bool,
}

impl Output {
    /// Sends what is buffered (the head first, the first time) and waits for the client.
    async fn send(&mut self, local: &Local, conn: &mut Conn, req: &Req) -> Result<(), ApiError> {
        if !self.streaming {
            self.streaming = true;
            response::start(&mut conn.out, 200);
            response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
            if req.keep_alive {
                conn.out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            } else {
                conn.out.extend_from_slice(b"Connection: close\r\n\r\n");
            }
        }
        if !req.head_only && !self.body.is_empty() {
            if req.keep_alive {
                conn.out.extend_from_slice(format!("{:x}\r\n", self.body.len()).as_bytes());
                conn.out.extend_from_slice(&self.body);
                conn.out.extend_from_slice(b"\r\n");
            } else {
                conn.out.extend_from_slice(&self.body);
            }
        }
        self.body.clear();
        Block::add(&local.ctx.metrics.bytes_out, conn.out.len() as u64);
        conn.flush().await?;
        Ok(())
    }
}

/// A key and its record as a JSON object (`?list&records`, what `mkv verify -online` reads):
/// `{"key":…,"volumes":[…],"size":…,"md5":"hex"|null,"mtime":ms}`.
fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8], url: bool) -> Result<(), ApiError> {
    let rec = RecordRef::parse(value).map_err(crate::index::Error::from)?;
    out.extend_from_slice(b"{\"key\":");
    string(out, key, url);
    out.extend_from_slice(b",\"volumes\":[");
    for (i, v) in rec.volumes().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, v.as_bytes(), false);
    }
    out.extend_from_slice(b"],\"size\":");
    out.extend_from_slice(itoa::Buffer::new().format(rec.size).as_bytes());
    out.extend_from_slice(b",\"md5\":");
    match rec.md5 {
        Some(m) => {
            out.push(b'"');
            for b in m {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"mtime\":");
    out.extend_from_slice(itoa::Buffer::new().format(rec.mtime).as_bytes());
    out.push(b'}');
    Ok(())
}

/// `s` as a JSON string: percent-encoded with `url`; else UTF-8 as it is (JSON escapes
/// where needed) and each byte outside valid UTF-8 as `\udcXX`.
pub fn string(out: &mut Vec<u8>, s: &[u8], url: bool) {
    out.push(b'"');
    if url {
        crate::http::percent_encode(out, s);
    } else {
        for chunk in s.utf8_chunks() {
            for c in chunk.valid().chars() {
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
            for &b in chunk.invalid() {
                out.extend_from_slice(format!("\\udc{b:02x}").as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Lets the runtime run other tasks before continuing (monoio has no `yield_now`).
pub(super) async fn yield_now() {
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

    fn s(key: &[u8], url: bool) -> String {
        let mut out = vec![];
        string(&mut out, key, url);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_strings_keep_every_byte() {
        assert_eq!(s(b"/a \"b\"\\\n", false), "\"/a \\\"b\\\"\\\\\\u000a\"");
        assert_eq!(s("/é".as_bytes(), false), "\"/é\"");
        assert_eq!(s(b"/a\xffb\xc3", false), "\"/a\\udcffb\\udcc3\"");
        assert_eq!(s(b"/a b/\xff%", true), "\"/a%20b/%FF%25\"");
    }
}
