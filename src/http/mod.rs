//! Our HTTP/1.1: request heads (httparse), body framing, responses, with named limits.
//! Knows nothing about keys: it turns bytes into requests and answers into bytes.

mod chunked;
mod conn;
pub mod response;
pub mod watch;

use std::{fmt, io, ops::Range};

pub use chunked::Chunked;
pub use conn::{Body, Conn};
pub use watch::{Watch, Watched};

use crate::config::Limits;

/// Headers a request head is parsed with on the stack: the usual few. A head with more is
/// parsed again with room for [`MAX_HEADERS`] on the heap.
const STACK_HEADERS: usize = 64;
/// Most headers a request may carry; more is `431`. S3's 2 KiB of user metadata alone can
/// be ~150 `x-amz-meta-*` headers (boto3 sends one per entry).
pub const MAX_HEADERS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Unlink,
    List,
    Rebalance,
    /// Admin: show or switch the volume list (online rebalance).
    Volumes,
    /// Admin: check and restore one key's replicas (`mkv verify -online -repair`).
    Repair,
    /// Admin: a consistent copy of the index (`mkv snapshot -online`).
    Snapshot,
    Other,
}

/// How a handler answered.
pub enum Reply {
    /// Status line and headers are in the output buffer; this is the body (the connection
    /// adds `Content-Length`).
    Body(Vec<u8>),
    /// The whole answer went out already (a streamed listing or object); `keep`: whether
    /// the connection can carry another request.
    Streamed { status: u16, keep: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// An `X-Amz-*` header, or one of the `amz-sdk-*` headers the AWS SDKs send with every
/// request, signed or not (`aws --no-sign-request`, boto3's UNSIGNED): a HEAD or DELETE
/// such a client sends anonymously carries nothing else S3.md names. No native client sends
/// either.
pub fn amz_header(name: &str) -> bool {
    let n = name.as_bytes();
    (n.len() > 6 && n[..6].eq_ignore_ascii_case(b"x-amz-")) || (n.len() > 8 && n[..8].eq_ignore_ascii_case(b"amz-sdk-"))
}

/// A parsed request head; the target is a range into the connection's buffer.
#[derive(Clone, Debug)]
pub struct Head {
    pub method: Method,
    pub target: Range<usize>,
    /// The `Authorization` header's value, when sent (admin methods read it).
    pub auth: Option<Range<usize>>,
    /// An `X-Amz-*`, `amz-sdk-*`, `Authorization` or `Content-Encoding` header was sent: the
    /// request may be S3's (the S3 layer decides from the whole head).
    pub s3_hint: bool,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub len: usize,
}

/// What went wrong on the client side of a connection.
#[derive(Debug)]
pub enum Error {
    BadRequest(&'static str),
    UriTooLong,
    HeadTooLarge,
    BodyTooLarge,
    /// An `Expect` other than `100-continue` (RFC 9110: `417`).
    ExpectationFailed,
    /// The client was too slow (head or body).
    Timeout,
    /// The client went away mid-request.
    Closed,
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::UriTooLong => write!(f, "request target too long"),
            Error::HeadTooLarge => write!(f, "request head too large"),
            Error::BodyTooLarge => write!(f, "request body too large"),
            Error::ExpectationFailed => write!(f, "unsupported Expect (only 100-continue is)"),
            Error::Timeout => write!(f, "client too slow"),
            Error::Closed => write!(f, "client closed the connection"),
            Error::Io(e) => write!(f, "client i/o: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses a request head from `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; STACK_HEADERS];
    match parse_with(buf, limits, &mut headers) {
        // too many headers for the stack (or too large a head: then again so)
        Err(Error::HeadTooLarge) => parse_with(buf, limits, &mut vec![httparse::EMPTY_HEADER; MAX_HEADERS]),
        r => r,
    }
}

fn parse_with<'b>(buf: &'b [u8], limits: &Limits, headers: &mut [httparse::Header<'b>]) -> Result<Option<Head>, Error> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            let line_done = buf.contains(&b'\n');
            if !line_done && buf.len() > limits.max_uri + 32 {
                return Err(Error::UriTooLong);
            }
            if buf.len() >= limits.max_head {
                return Err(if line_done { Error::HeadTooLarge } else { Error::UriTooLong });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(Error::BadRequest("bad HTTP version")),
        Err(_) => return Err(Error::BadRequest("malformed request head")),
    };
    if len > limits.max_head {
        return Err(Error::HeadTooLarge);
    }
    let path = origin_form(req.path.unwrap_or(""));
    if path.len() > limits.max_uri {
        return Err(Error::UriTooLong);
    }
    if !path.starts_with('/') {
        return Err(Error::BadRequest("request target must start with /"));
    }
    let start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "UNLINK" => Method::Unlink,
        "LIST" => Method::List,
        "REBALANCE" => Method::Rebalance,
        "VOLUMES" => Method::Volumes,
        "REPAIR" => Method::Repair,
        "SNAPSHOT" => Method::Snapshot,
        _ => Method::Other,
    };
    let http11 = req.version == Some(1);
    let mut keep_alive = http11;
    let mut expect_continue = false;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut auth = None;
    let mut s3_hint = false;
    let mut hosts = 0;
    let base = buf.as_ptr() as usize;
    for h in req.headers.iter() {
        let name = h.name;
        if amz_header(name) {
            s3_hint = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            let at = h.value.as_ptr() as usize - base;
            auth = Some(at..at + h.value.len());
            s3_hint = true;
        } else if name.eq_ignore_ascii_case("content-encoding") {
            s3_hint = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or(Error::BadRequest("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::BadRequest("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !trim(h.value).eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(Error::BadRequest("unsupported Transfer-Encoding (only chunked)"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, b"close") {
                keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                return Err(Error::ExpectationFailed);
            }
            expect_continue = http11;
        } else if name.eq_ignore_ascii_case("host") {
            // RFC 3986's host[:port] has no space, and no '/', '?', '#' or '@' (nginx refuses
            // them too); the rest of its grammar is not checked
            if trim(h.value).iter().any(|&b| matches!(b, b' ' | b'\t' | b'/' | b'?' | b'#' | b'@' | b'\\')) {
                return Err(Error::BadRequest("bad Host header"));
            }
            hosts += 1;
        }
    }
    let framing = match (length, chunked) {
        // both at once is how requests are smuggled: refuse
        (Some(_), true) => return Err(Error::BadRequest("both Content-Length and Transfer-Encoding")),
        (_, true) => Framing::Chunked,
        (Some(0), false) | (None, false) => Framing::None,
        (Some(n), false) => Framing::Length(n),
    };
    if let Framing::Length(n) = framing {
        if limits.max_body > 0 && n > limits.max_body {
            return Err(Error::BodyTooLarge);
        }
    }
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without a Host, and for any with two (as
    // nginx and Go's server answer)
    if hosts > 1 {
        return Err(Error::BadRequest("more than one Host header"));
    }
    if http11 && hosts == 0 {
        return Err(Error::BadRequest("an HTTP/1.1 request needs a Host header"));
    }
    Ok(Some(Head {
        method,
        target: start..start + path.len(),
        auth,
        s3_hint,
        framing,
        keep_alive,
        expect_continue,
        len,
    }))
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// The path and query of a request target: an absolute-form target (`http://host/k?q`, which
/// RFC 9112 §3.2.2 has servers accept, as a proxy sends it) loses its scheme and authority.
pub fn origin_form(target: &str) -> &str {
    // every request passes here: one byte compared for the usual `/...`, no allocation
    if target.starts_with('/') {
        return target;
    }
    let scheme = |s: &str| target.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s));
    let rest = if scheme("http://") {
        &target[7..]
    } else if scheme("https://") {
        &target[8..]
    } else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        // `http://host` or `http://host?q`: no path of its own to give (a slice of the target
        // is what callers locate in the head), so it stays as it is and is refused
        _ => target,
    }
}

/// Splits a request target into its path and query (without the `?`).
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[]),
    }
}

/// A decimal number, digits only (no sign, not empty); past `u64`, `u64::MAX`: a count or
/// a byte position that large means "all", not a malformed request.
pub fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// Decodes a query value onto `out` as form encoders write it (Python's `requests`, Go's
/// `url.Values`, which minikeyvalue reads with): `%XX`, and `+` for a space. A `+` itself
/// comes as `%2B`, as [`percent_encode`] writes it.
pub fn query_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    decode(src, out, true)
}

/// Percent-decodes `src` onto `out` (`+` stays `+`: this is a path, not a form).
pub fn percent_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    decode(src, out, false)
}

fn decode(src: &[u8], out: &mut Vec<u8>, plus_is_space: bool) -> Result<(), Error> {
    let mut i = 0;
    while i < src.len() {
        let b = src[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (src.get(i + 1).and_then(|&c| hex(c)), src.get(i + 2).and_then(|&c| hex(c))) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(Error::BadRequest("bad percent-encoding")),
            }
            i += 3;
        } else {
            out.push(if b == b'+' && plus_is_space { b' ' } else { b });
            i += 1;
        }
    }
    Ok(())
}

/// Percent-encodes every byte but the unreserved ones and `/` (as S3's `encoding-type=url`):
/// the result is a valid path, and a query value that [`percent_decode`] gives back whole.
pub fn percent_encode(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// The query parameters as `(name, raw value)` pairs.
pub fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &[][..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<Head>, Error> {
        parse_head(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn heads() {
        let h = parse("PUT /a%20b?x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!(h.method, Method::Put);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive && !h.expect_continue);
        assert_eq!(h.len, 53);
        for host in ["h", "h:3000", "[::1]:3000", "127.0.0.1:3000", " h "] {
            let head = format!("GET /k HTTP/1.1\r\nHost:{host}\r\n\r\n");
            assert!(parse(&head).unwrap().is_some(), "{host:?}");
        }
        // HTTP/1.0 needs no Host
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h =
            parse("PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.expect_continue && !h.keep_alive);
        // an expectation this server cannot meet is 417, not a malformed request
        let e = parse("PUT /k HTTP/1.1\r\nContent-Length: 1\r\nExpect: bogus\r\n\r\n").unwrap_err();
        assert!(matches!(e, Error::ExpectationFailed), "{e}");
        assert_eq!(parse("UNLINK /k HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().unwrap().method, Method::Unlink);
        assert_eq!(parse("BREW /k HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().unwrap().method, Method::Other);
        assert!(parse("GET /k HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn absolute_form_targets() {
        let raw = "GET http://localhost:3000/a/b?list HTTP/1.1\r\nHost: localhost:3000\r\n\r\n";
        let h = parse(raw).unwrap().unwrap();
        assert_eq!(&raw[h.target.clone()], "/a/b?list");
        assert_eq!(origin_form("HTTPS://h/k"), "/k");
        assert_eq!(origin_form("/http://h/k"), "/http://h/k");
        assert!(parse("GET http://localhost:3000 HTTP/1.1\r\n\r\n").is_err());
        assert!(parse("GET http://h?q HTTP/1.1\r\n\r\n").is_err());
    }

    /// A head with more headers than the stack's room is parsed on the heap, up to
    /// MAX_HEADERS (boto3 sends one header per user metadata entry); past that, 431.
    #[test]
    fn many_headers() {
        let head = |n: usize| {
            let meta: String = (0..n).map(|i| format!("x-amz-meta-k{i}: v\r\n")).collect();
            format!("PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n{meta}\r\nx")
        };
        for n in [STACK_HEADERS, STACK_HEADERS + 1, 150, MAX_HEADERS - 2] {
            let h = parse(&head(n)).unwrap_or_else(|e| panic!("{n} headers: {e}")).unwrap();
            assert_eq!(h.framing, Framing::Length(1));
            assert!(h.s3_hint);
        }
        assert!(matches!(parse(&head(MAX_HEADERS - 1)), Err(Error::HeadTooLarge)));
    }

    #[test]
    fn bad_heads() {
        for bad in [
            "GARBAGE\r\n\r\n",
            "GET /k HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET /k HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            "GET /k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "PUT /k HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET k HTTP/1.1\r\n\r\n",
            "GET /k HTTP/2.0\r\n\r\n",
            // RFC 9112 §3.2
            "GET /k HTTP/1.1\r\n\r\n",
            "GET /k HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /k HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
            "GET /k HTTP/1.1\r\nHost: a, b\r\n\r\n",
            "GET /k HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET /k HTTP/1.1\r\nHost: a/b\r\n\r\n",
        ] {
            assert!(matches!(parse(bad), Err(Error::BadRequest(_))), "{bad:?}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert!(matches!(parse(&long), Err(Error::UriTooLong)));
        let partial_long = format!("GET /{}", "a".repeat(9000));
        assert!(matches!(parse(&partial_long), Err(Error::UriTooLong)));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(70000));
        assert!(matches!(parse(&big), Err(Error::HeadTooLarge)));
        let many: String = (0..MAX_HEADERS + 4).map(|i| format!("X{i}: y\r\n")).collect();
        assert!(matches!(parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Err(Error::HeadTooLarge)));
        let limits = Limits { max_body: 10, ..Limits::default() };
        let r = parse_head(b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", &limits);
        assert!(matches!(r, Err(Error::BodyTooLarge)));
    }

    #[test]
    fn targets() {
        assert_eq!(split_target(b"/a?list&limit=3"), (&b"/a"[..], &b"list&limit=3"[..]));
        let q: Vec<_> = query_pairs(b"list&limit=3&&start=%2Fb").collect();
        assert_eq!(q, vec![(&b"list"[..], &b""[..]), (&b"limit"[..], &b"3"[..]), (&b"start"[..], &b"%2Fb"[..])]);
        let mut out = vec![];
        percent_decode(b"/a%20b+c%2f", &mut out).unwrap();
        assert_eq!(out, b"/a b+c/");
        assert!(percent_decode(b"/a%2", &mut vec![]).is_err());
        assert!(percent_decode(b"/a%zz", &mut vec![]).is_err());
    }
}
