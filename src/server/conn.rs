//! The life of one client connection: parse a head, route it, answer, decide whether the
//! connection can carry the next request (framing intact, body consumed), repeat.

use std::{net::SocketAddr, os::fd::AsRawFd, rc::Rc, time::Instant};

use monoio::net::TcpStream;

use super::{admin, handlers, ApiError, Local, Port};
use crate::{
    config::Limits,
    http::{self, response, Body, Conn, Framing, Head, Method, Reply, Watch},
    index::State,
    metrics, s3,
};

/// A body this small is read and dropped after an early answer, keeping the connection;
/// a larger one closes it.
const DISCARD_MAX: u64 = 64 << 10;
/// Answers to pipelined requests are flushed once this much waits, even while requests
/// remain: memory per connection stays bounded whatever a client sends.
const OUT_FLUSH: usize = 64 << 10;

/// One request, decoded into buffers the connection reuses.
#[derive(Default)]
pub struct Req {
    pub method: Option<Method>,
    /// The percent-decoded path: the key (or the prefix of a listing).
    pub key: Vec<u8>,
    /// The path as sent, for `-fallback` redirects.
    pub raw_path: Vec<u8>,
    /// `?list` or `?unlinked`.
    pub list: Option<State>,
    pub start: Vec<u8>,
    /// `limit=`: None when absent, Err when not a non-negative integer.
    pub limit: Option<Result<usize, ()>>,
    /// `encoding=url`: listed keys (and `next`) percent-encoded.
    pub url_encoded: bool,
    /// `records`: a listing gives each key's record, not only its name.
    pub records: bool,
    /// `?pending`: list the replacements being written.
    pub pending: bool,
    /// `?parts`: GET lists the S3 part files that part records name; `VOLUMES /?parts`
    /// moves S3 uploads' parts to the placement in force; `REPAIR /?parts` checks them and
    /// copies damaged replicas again (`deep`: reads them; `check`: repairs nothing).
    pub parts: bool,
    pub deep: bool,
    pub check_only: bool,
    /// `REPAIR /?parts&rate=N`: deep reads at most N MiB/s (0 or absent: no limit).
    pub rate: f64,
    /// `REPAIR`: replicas found corrupt, files found where no record wants them, and
    /// whether to check the unlink markers.
    pub suspects: Vec<String>,
    pub orphans: Vec<String>,
    pub markers: bool,
    /// `SNAPSHOT /?to=DIR`.
    pub to: Option<String>,
    pub head_only: bool,
    /// `VOLUMES /?volumes=a,b,c&replicas=N`.
    pub volumes: Option<String>,
    pub replicas: Option<Result<usize, ()>>,
    /// `VOLUMES /?settled=a,b,c`: the rebalance onto that list ended; forget the others.
    pub settled: Option<String>,
    /// The `Authorization` header, when sent.
    pub auth: Option<Vec<u8>>,
    /// Whether the peer is on this host (admin methods need it, or a token).
    pub loopback: bool,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

impl Req {
    fn load(&mut self, head: &Head, conn: &Conn) -> Result<(), ApiError> {
        let method = head.method;
        self.method = Some(method);
        self.head_only = method == Method::Head;
        self.keep_alive = head.keep_alive && !conn.draining();
        self.auth = head.auth.as_ref().map(|r| conn.head_bytes(r).to_vec());
        let (path, query) = http::split_target(conn.head_bytes(&head.target));
        self.key.clear();
        self.raw_path.clear();
        self.raw_path.extend_from_slice(path);
        self.list = None;
        self.start.clear();
        self.limit = None;
        self.url_encoded = false;
        self.records = false;
        self.pending = false;
        self.parts = false;
        self.deep = false;
        self.check_only = false;
        self.rate = 0.0;
        self.suspects.clear();
        self.orphans.clear();
        self.markers = false;
        self.to = None;
        self.volumes = None;
        self.replicas = None;
        self.settled = None;
        http::percent_decode(path, &mut self.key)?;
        for (name, value) in http::query_pairs(query) {
            match name {
                b"list" => self.list = self.list.or(Some(State::Live)),
                b"unlinked" => self.list = Some(State::Unlinked),
                b"start" => {
                    self.start.clear();
                    http::query_decode(value, &mut self.start)?;
                }
                b"encoding" => match value {
                    b"url" => self.url_encoded = true,
                    _ => return Err(ApiError::BadQuery("encoding must be 'url'")),
                },
                b"records" => self.records = true,
                b"pending" => self.pending = true,
                // on `/` only (the listings' root, as in `/?unlinked`): `GET /k?parts` stays
                // the native GET of /k, as it was before `?parts` existed
                b"parts" if self.key == b"/" => self.parts = true,
                b"suspects" | b"orphans" if method == Method::Repair => {
                    let list = if name == b"suspects" { &mut self.suspects } else { &mut self.orphans };
                    let text = text_param(value)?;
                    list.extend(text.split(',').filter(|v| !v.is_empty()).map(str::to_string));
                }
                b"markers" if method == Method::Repair => {
                    self.markers = switch(value).map_err(|_| ApiError::BadQuery("markers must be 1 or 0"))?
                }
                b"deep" if method == Method::Repair => {
                    self.deep = switch(value).map_err(|_| ApiError::BadQuery("deep must be 1 or 0"))?
                }
                b"check" if method == Method::Repair => {
                    self.check_only = switch(value).map_err(|_| ApiError::BadQuery("check must be 1 or 0"))?
                }
                b"rate" if method == Method::Repair => {
                    let rate = std::str::from_utf8(value).ok().and_then(|v| v.parse::<f64>().ok());
                    self.rate =
                        rate.filter(|r| r.is_finite() && *r >= 0.0).ok_or(ApiError::BadQuery("rate must be MiB/s"))?;
                }
                b"to" if method == Method::Snapshot => self.to = Some(text_param(value)?),
                b"volumes" | b"settled" if method == Method::Volumes => {
                    let mut v = Vec::new();
                    http::query_decode(value, &mut v)?;
                    let v = String::from_utf8(v).map_err(|_| ApiError::BadQuery("volumes must be text"))?;
                    *(if name == b"volumes" { &mut self.volumes } else { &mut self.settled }) = Some(v);
                }
                b"replicas" if method == Method::Volumes => self.replicas = Some(count(value)),
                b"limit" => self.limit = Some(count(value)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The request kind, for the metrics.
    fn kind(&self) -> usize {
        let listing = self.list.is_some() || self.pending || self.parts;
        match self.method {
            // as the handlers read it: only a GET or HEAD with one of these lists (a PUT or
            // DELETE of `/k?list` writes or deletes `/k`; `VOLUMES /?parts` is a volume change)
            Some(Method::Get | Method::Head) if listing => metrics::LIST,
            Some(Method::Get) => metrics::GET,
            Some(Method::Head) => metrics::HEAD,
            Some(Method::Put) => metrics::PUT,
            Some(Method::Delete) => metrics::DELETE,
            Some(Method::Unlink) => metrics::UNLINK,
            Some(Method::List) => metrics::LIST,
            Some(Method::Rebalance) => metrics::REBALANCE,
            Some(Method::Volumes | Method::Repair | Method::Snapshot) => metrics::ADMIN,
            _ => metrics::OTHER,
        }
    }
}

pub async fn serve(local: &Local, watch: &Rc<Watch>, stream: TcpStream, peer: SocketAddr, port: Port) {
    let ctx = &local.ctx;
    let admin_limits;
    let limits = match port {
        Port::Api => &ctx.shared.cfg.limits,
        Port::Admin => {
            let l = &ctx.shared.cfg.limits;
            admin_limits = Limits { idle_timeout: l.idle_timeout.min(super::ADMIN_IDLE), ..l.clone() };
            &admin_limits
        }
    };
    // an admin connection waiting for a request may be closed to let a new one in
    let watched = watch.register(stream.as_raw_fd(), port == Port::Admin);
    let mut conn = Conn::new(stream, watched, limits);
    let mut req = Req { loopback: is_loopback(&peer), ..Req::default() };
    loop {
        let head = match conn.next_head(limits).await {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                let e = ApiError::Http(e);
                if !matches!(e, ApiError::Http(http::Error::Closed | http::Error::Io(_))) {
                    response::text(&mut conn.out, e.status(), &format!("{e}\n"), false, false);
                    let flushed = conn.flush().await.is_ok();
                    ctx.metrics.request(metrics::BAD, e.status(), 0);
                    // a Content-Length over -max-body: a whole head, its body on its way
                    if flushed && matches!(e, ApiError::Http(http::Error::BodyTooLarge)) {
                        conn.linger().await;
                    }
                }
                break;
            }
        };
        let began = Instant::now();
        let target = conn.head_bytes(&head.target);
        let s3 = port == Port::Api && might_be_s3(&head, target) && s3::serve::is_s3(conn.head_raw(head.len));
        let raw_s3 = s3.then(|| conn.head_raw(head.len).to_vec());
        let s3_said = raw_s3.as_deref().filter(|_| ctx.shared.cfg.verbose).map(s3_log_line);
        let loaded = if s3 { Ok(()) } else { req.load(&head, &conn) };
        conn.consume(head.len);
        let mut body = Body::new(&head, limits, conn.now());
        let at = conn.out.len();
        let wanted = head.keep_alive && !conn.draining();
        let (reply, close, kind) = match raw_s3 {
            Some(raw) => {
                let a = s3::serve::serve(&local.ctx, &mut conn, &raw, &mut body, wanted).await;
                (a.reply, a.close, metrics::S3)
            }
            None => {
                let result = match loaded {
                    Ok(()) => match port {
                        Port::Api => handlers::handle(local, &mut conn, &mut req, &mut body).await,
                        Port::Admin => admin::handle(local, &mut conn, &mut req).await,
                    },
                    Err(e) => Err(e),
                };
                // the admin port's pages are not API traffic: a scrape must not count as a GET
                let kind = if port == Port::Admin { metrics::ADMIN } else { req.kind() };
                match result {
                    Ok(r) => (r, false, kind),
                    Err(e) => (error_reply(&mut conn.out, &e, head.method, &req.key), e.closes(), kind),
                }
            }
        };
        // a stop that began while this request ran: its answer says the connection closes
        let mut keep = wanted && !close && !conn.draining() && !matches!(reply, Reply::Streamed { keep: false, .. });
        if keep && !body.is_done() {
            keep = skip_body(&mut conn, &mut body, head.framing).await;
        }
        let status = match reply {
            Reply::Body(b) => {
                let status = reply_status(&conn.out, at);
                response::finish(&mut conn.out, status, &b, keep, head.method == Method::Head);
                status
            }
            Reply::Streamed { status, keep: k } => {
                keep &= k;
                status
            }
        };
        let took = began.elapsed();
        // whatever the handler made of it, no one reads this answer (nginx's 499)
        let status = if body.client_gone() { metrics::CLIENT_GONE } else { status };
        ctx.metrics.request(kind, status, took.as_micros() as u64);
        metrics::Block::add(&ctx.metrics.bytes_in, (head.len as u64) + body.received());
        metrics::Block::add(&ctx.metrics.bytes_out, conn.out.len().saturating_sub(at) as u64);
        if ctx.shared.cfg.verbose {
            match &s3_said {
                Some(said) => eprintln!("{said} {status} {took:?}"),
                None => eprintln!("{:?} {} {status} {took:?}", head.method, req.key.escape_ascii()),
            }
        }
        if !keep {
            if conn.flush().await.is_ok() && !body.is_done() {
                conn.linger().await;
            }
            break;
        }
        if conn.out.len() >= OUT_FLUSH && conn.flush().await.is_err() {
            break;
        }
    }
}

/// A native request's error as its answer's head (the body is the `Reply`): the status,
/// the header the error carries, its reason in plain text unless it is one answered
/// silently; a `5xx` is logged.
fn error_reply(out: &mut Vec<u8>, e: &ApiError, method: Method, key: &[u8]) -> Reply {
    let status = e.status();
    if status >= 500 {
        eprintln!("mkv: {method:?} {}: {status} {e}", key.escape_ascii());
    }
    response::start(out, status);
    if let Some((name, value)) = e.header() {
        response::header(out, name, &[value.as_bytes()]);
    }
    let msg = if e.silent() { String::new() } else { format!("{e}\n") };
    if !msg.is_empty() {
        response::header(out, "Content-Type", &[b"text/plain; charset=utf-8"]);
    }
    Reply::Body(msg.into_bytes())
}

/// Reads past the body of a request answered without it, so that the connection can go on:
/// an early answer (403, 409, ...), or one that never wanted a body (a GET or a listing
/// streamed out, whose request carried one anyway). Its bytes would be read as the next
/// request otherwise. False when the connection must close instead.
async fn skip_body(conn: &mut Conn, body: &mut Body, framing: Framing) -> bool {
    !body.awaits_continue()
        && match framing {
            // its length known only once it ended: kept when its end is in already
            Framing::Chunked => conn.discard_buffered(body, DISCARD_MAX as usize).unwrap_or(false),
            _ => body.remaining() <= DISCARD_MAX && conn.discard(body).await.is_ok(),
        }
}

/// A query value that must be a number (digits only, once form-decoded as every query
/// value is: `%31` is `1`; past `usize`, the largest).
fn count(value: &[u8]) -> Result<usize, ()> {
    let mut v = Vec::new();
    http::query_decode(value, &mut v).map_err(|_| ())?;
    http::decimal(&v).map(|n| usize::try_from(n).unwrap_or(usize::MAX)).ok_or(())
}

/// A switch in a query (`deep`, `check`, `markers`): present with no value, `1` or `true` is
/// on; `0` or `false` off; anything else is refused rather than guessed.
fn switch(value: &[u8]) -> Result<bool, ()> {
    // form-decoded, as every query value is (`deep=%31` is `deep=1`)
    let mut v = Vec::new();
    http::query_decode(value, &mut v).map_err(|_| ())?;
    match &v[..] {
        b"" | b"1" | b"true" => Ok(true),
        b"0" | b"false" => Ok(false),
        _ => Err(()),
    }
}

/// A query value that must be text.
fn text_param(value: &[u8]) -> Result<String, ApiError> {
    let mut v = Vec::new();
    http::query_decode(value, &mut v)?;
    String::from_utf8(v).map_err(|_| ApiError::BadQuery("a query value must be text"))
}

/// Whether the request may be S3's, cheaply: the S3 layer then decides from the whole head.
/// A native GET of a key (the hot path) is never asked.
fn might_be_s3(head: &Head, target: &[u8]) -> bool {
    head.s3_hint
        || head.method == Method::Post
        || target.contains(&b'?')
        || (head.method == Method::Put && head.framing == Framing::None && target.ends_with(b"/"))
}

/// What `-v` says of an S3 request: `S3 <method> <path>`, never its query (a presigned URL
/// in a log would open the object to whoever reads it, until it expires).
fn s3_log_line(raw: &[u8]) -> String {
    let line = raw.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    format!("S3 {} {}", method.escape_ascii(), path.escape_ascii())
}

fn is_loopback(peer: &SocketAddr) -> bool {
    match peer {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The status code of the answer that began at `at` in `out`. A `100 Continue` sent on the
/// way flushed what was before it (and itself), so `at` may have gone: the answer is then at
/// the start.
fn reply_status(out: &[u8], at: usize) -> u16 {
    let answer = out.get(at..).filter(|a| a.starts_with(b"HTTP/1.1 ")).unwrap_or(out);
    std::str::from_utf8(answer.get(9..12).unwrap_or(b"000")).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    /// A REPAIR switch is on or off: `deep=2` or `check=yes` was taken for on, so a typo
    /// could turn a check into a repair (`check=no` repaired, `check=flase` did not).
    #[test]
    fn a_switch_is_on_or_off_and_nothing_else() {
        for on in [&b""[..], b"1", b"true", b"%31"] {
            assert_eq!(super::switch(on), Ok(true), "{:?}", String::from_utf8_lossy(on));
        }
        for off in [&b"0"[..], b"false"] {
            assert_eq!(super::switch(off), Ok(false), "{:?}", String::from_utf8_lossy(off));
        }
        for bad in [&b"2"[..], b"yes", b"no", b"flase", b"%32", b"%zz"] {
            assert_eq!(super::switch(bad), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Query values are form-encoded (README): `limit=%31` is 1; it was refused (400).
    #[test]
    fn a_count_is_read_form_decoded() {
        assert_eq!(super::count(b"%31%30"), Ok(10));
        assert_eq!(super::count(b"7"), Ok(7));
        assert_eq!(super::count(b"99999999999999999999999"), Ok(usize::MAX));
        for bad in [&b"-1"[..], b"x", b"%2D1", b"%zz", b""] {
            assert_eq!(super::count(bad), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
