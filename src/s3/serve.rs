//! One S3 request from its head to its answer: authenticated, parsed into an [`Op`], run
//! through the store's operations, answered with S3's status codes and XML errors.

use std::{cell::RefCell, path::Path, sync::OnceLock};

use super::{
    bucket,
    error::S3Error,
    multipart, object,
    request::{self, Headers, Object, Op},
    sigv4::{self, KeyCache, Keys, Verified},
    xml,
};
use crate::{
    http::{response, Body, Conn, Framing, Reply},
    index, store,
};

/// Most headers an S3 request may carry: what the HTTP layer let through.
const MAX_HEADERS: usize = crate::http::MAX_HEADERS;
/// The region mkv answers as (GetBucketLocation, and what clients sign for by default).
pub const REGION: &str = "us-east-1";

/// `-s3-keys`: None when S3 requests are accepted unsigned.
static KEYS: OnceLock<Option<Keys>> = OnceLock::new();

/// Reads `-s3-keys FILE` (lines `ACCESS_KEY SECRET_KEY`) once at start; the error never
/// quotes the file.
pub fn read_keys(path: Option<&Path>) -> Result<Option<Keys>, String> {
    let Some(p) = path else { return Ok(None) };
    let text = std::fs::read_to_string(p).map_err(|e| format!("-s3-keys {}: {e}", p.display()))?;
    let keys = Keys::parse(&text).map_err(|e| format!("-s3-keys {}: {e}", p.display()))?;
    if keys.len() == 0 {
        return Err(format!("-s3-keys {}: no keys in it (lines: ACCESS_KEY SECRET_KEY)", p.display()));
    }
    Ok(Some(keys))
}

/// Makes `keys` (from [`read_keys`]) the ones every S3 request is checked against.
pub fn install_keys(keys: Option<Keys>) {
    let _ = KEYS.set(keys);
}

thread_local! {
    static SIGNING: RefCell<KeyCache> = RefCell::new(KeyCache::default());
}

/// A request id unique in this master's life (`x-amz-request-id`, error bodies): the pid,
/// read once, and one count for every thread (a count per thread gave the same ids on two).
fn request_id() -> String {
    static PID: OnceLock<u32> = OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:X}{n:08X}", PID.get_or_init(std::process::id))
}

/// An S3 request's head, parsed from the bytes the connection read.
pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub headers: Headers<'a>,
    pub request_id: String,
    /// Whether the client keeps the connection (so the answer may too).
    pub keep_alive: bool,
}

impl Req<'_> {
    pub fn head_only(&self) -> bool {
        self.method == "HEAD"
    }
}

/// How an S3 request ended, for the connection loop.
pub struct Answer {
    pub reply: Reply,
    /// The connection cannot carry another request (a body not read to its end through a
    /// framing error, a stream cut).
    pub close: bool,
}

/// Whether a whole request head (as read) is an S3 request, by S3.md's rule.
pub fn is_s3(raw: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(raw), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let (path, query) = crate::http::split_target(crate::http::origin_form(req.path.unwrap_or("/")).as_bytes());
    request::is_s3(req.method.unwrap_or(""), path, query, &Headers(req.headers))
}

/// Answers one S3 request; `raw` is its whole head.
pub async fn serve(ctx: &store::Ctx, conn: &mut Conn, raw: &[u8], body: &mut Body, keep_alive: bool) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let request_id = request_id();
    if !matches!(parsed.parse(raw), Ok(httparse::Status::Complete(_))) {
        return error(conn, &S3Error::InvalidRequest("malformed request head"), b"/", &request_id, false, true);
    }
    if expects_continue(&parsed) && body.framing() == Framing::None && conn.out.is_empty() {
        // the HTTP layer sends `100 Continue` only before a body, but a client that asked
        // for one waits for it even when it announced none: the AWS CLI's botocore, answered
        // at once, keeps that status line for its next request on the connection and hangs
        // misreading the answer. S3 sends it. (With answers to pipelined requests still
        // queued, none is sent, as HTTP allows: only an idle client waits for it.)
        conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        let _ = conn.flush().await; // a write that fails fails the answer's too
    }
    let (path, query) = crate::http::split_target(crate::http::origin_form(parsed.path.unwrap_or("/")).as_bytes());
    let req = Req {
        method: parsed.method.unwrap_or(""),
        path,
        query,
        headers: Headers(parsed.headers),
        request_id,
        keep_alive,
    };
    match run(ctx, conn, &req, body).await {
        Ok(a) => a,
        Err(Failure { error, close }) => error_answer(conn, &req, &error, close),
    }
}

/// A PutObject's or UploadPart's body must state its length (`Content-Length`, or chunked):
/// one that does not has none (RFC 9112), and S3 answers `411` rather than store an empty
/// object. A folder marker's empty PUT (`/b/dir/`, which some clients send bare) is exempt.
fn length_stated(req: &Req, obj: &Object) -> Result<(), S3Error> {
    let stated = req.headers.has("content-length") || req.headers.has("transfer-encoding");
    if stated || obj.key.ends_with(b"/") {
        return Ok(());
    }
    Err(S3Error::MissingContentLength)
}

/// `Expect: 100-continue` on an HTTP/1.1 request (HTTP/1.0 ignores it).
fn expects_continue(req: &httparse::Request) -> bool {
    req.version == Some(1)
        && req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect") && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        })
}

/// An error, and whether the connection must close after its answer.
pub struct Failure {
    pub error: S3Error,
    pub close: bool,
}

impl From<S3Error> for Failure {
    fn from(error: S3Error) -> Failure {
        Failure { error, close: false }
    }
}

impl From<store::Error> for Failure {
    fn from(e: store::Error) -> Failure {
        Failure { error: store_error(e), close: false }
    }
}

/// The answer to `req` that `e` is (the one place S3 errors are written).
pub fn error_answer(conn: &mut Conn, req: &Req, e: &S3Error, close: bool) -> Answer {
    error(conn, e, req.path, &req.request_id, req.head_only(), close)
}

fn error(conn: &mut Conn, e: &S3Error, resource: &[u8], request_id: &str, head_only: bool, close: bool) -> Answer {
    let status = e.status();
    start(conn, status, request_id);
    if !e.has_body() {
        return Answer { reply: Reply::Body(Vec::new()), close };
    }
    response::header(&mut conn.out, "Content-Type", &[b"application/xml"]);
    let body = if head_only { Vec::new() } else { xml::error(e, resource, request_id) };
    Answer { reply: Reply::Body(body), close }
}

/// The status line and the headers every S3 answer carries: `Date` too, as S3 sends it
/// (RFC 9110 asks it of a server with a clock; SDKs read it to correct a skewed clock).
pub fn start(conn: &mut Conn, status: u16, request_id: &str) {
    response::start(&mut conn.out, status);
    response::header(&mut conn.out, "x-amz-request-id", &[request_id.as_bytes()]);
    response::header(&mut conn.out, "Server", &[b"mkv"]);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        let now = now_secs();
        if d.0 != now {
            *d = (now, crate::dates::http_date(now));
        }
        response::header(&mut conn.out, "Date", &[d.1.as_bytes()]);
    });
}

thread_local! {
    /// This second's `Date`, formatted once a second per thread.
    static DATE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// An answer whose body is `body` (XML, or empty).
pub fn ok(conn: &mut Conn, req: &Req, status: u16, xml_body: Option<Vec<u8>>) -> Answer {
    start(conn, status, &req.request_id);
    let body = match xml_body {
        Some(b) => {
            response::header(&mut conn.out, "Content-Type", &[b"application/xml"]);
            b
        }
        None => Vec::new(),
    };
    Answer { reply: Reply::Body(if req.head_only() { Vec::new() } else { body }), close: false }
}

/// The XML declaration every S3 document opens with.
const PROLOG: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Runs a write that may take long (a Complete or a copy of gigabytes) and answers with the
/// document it returns. One still running after `-s3-keepalive` is answered `200` there and
/// then, with the XML declaration, and a space follows every `-s3-keepalive` until its
/// outcome (that document, or an `<Error>` one) ends the body, as S3 does: its SDKs look
/// for an error there, and a client's read timeout (botocore's is 60 s) no longer cuts off
/// a write that is going well. A client gone meanwhile does not stop the write.
pub async fn patiently(
    ctx: &store::Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    work: impl std::future::Future<Output = Result<Vec<u8>, Failure>>,
) -> Result<Answer, Failure> {
    use futures_util::future::{select, Either};
    let every = ctx.shared.cfg.s3_keepalive;
    if !reads_errors_in_200(&req.headers) {
        // answered when done, however long: a success it would misread is worse than a
        // timeout it reports
        return work.await.map(|doc| ok(conn, req, 200, Some(doc)));
    }
    let mut work = std::pin::pin!(work);
    let mut answered = false;
    let outcome = loop {
        match select(work.as_mut(), std::pin::pin!(monoio::time::sleep(every))).await {
            Either::Left((outcome, _)) => break outcome,
            Either::Right(_) if !answered => {
                start(conn, 200, &req.request_id);
                response::header(&mut conn.out, "Content-Type", &[b"application/xml"]);
                // the length is not known yet: the body ends with the connection
                conn.out.extend_from_slice(b"Connection: close\r\n\r\n");
                conn.out.extend_from_slice(PROLOG);
                answered = true;
                let _ = conn.flush().await;
            }
            Either::Right(_) => {
                conn.out.push(b' ');
                let _ = conn.flush().await;
            }
        }
    };
    if !answered {
        return outcome.map(|doc| ok(conn, req, 200, Some(doc)));
    }
    // the status line said 200; the metrics and the log count what the write came to
    let status = outcome.as_ref().map_or_else(|f| f.error.status(), |_| 200);
    let doc = match outcome {
        Ok(doc) => doc,
        Err(f) => {
            // the status said 200 already: the log says what became of it
            eprintln!(
                "mkv: S3 {} {}: failed after its 200 went out: {}",
                req.method,
                req.path.escape_ascii(),
                f.error.code()
            );
            xml::error(&f.error, req.path, &req.request_id)
        }
    };
    conn.out.extend_from_slice(doc.strip_prefix(PROLOG).unwrap_or(&doc));
    Ok(Answer { reply: Reply::Streamed { status, keep: false }, close: true })
}

/// Whether the client reads an `<Error>` in a `200` answer as the error it is, as S3's own
/// SDKs do (botocore, the Go and Java SDKs, rclone, s3cmd). The MinIO Python SDK does not:
/// it would take a failed Complete for a success (its read timeout is 5 minutes anyway).
fn reads_errors_in_200(headers: &Headers) -> bool {
    !headers.get("user-agent").is_some_and(|ua| ua.windows(8).any(|w| w.eq_ignore_ascii_case(b"minio-py")))
}

/// What S3 answers for a store's failure.
pub fn store_error(e: store::Error) -> S3Error {
    use store::Error as E;
    match e {
        E::NotFound => S3Error::NoSuchKey,
        E::KeyTooLong => S3Error::KeyTooLong,
        E::BadKey(_) => S3Error::InvalidArgument(
            "the volumes cannot store this key apart from another (its base64 file name holds '//' or ends in '/')",
        ),
        E::Protected => {
            S3Error::AccessDenied("the master runs with -protect: UNLINK the key before deleting or replacing it")
        }
        // clients retry a 503 SlowDown; another write of the key is about to end
        E::InFlight => S3Error::SlowDown,
        E::Exists | E::EmptyBody => S3Error::InternalError("unexpected refusal of an S3 write"),
        E::NoLiveReplica | E::NoGoodReplica => S3Error::ServiceUnavailable("no replica of this object is readable now"),
        E::Damaged => {
            S3Error::ServiceUnavailable("no replica of the copy source read holds its value (its MD5 differs)")
        }
        E::Settling => S3Error::ServiceUnavailable("a replacement of this object is still being moved into place"),
        // a refused or cut connection is a volume down as much as a silent one
        E::Volume(e) if e.unreachable() => S3Error::ServiceUnavailable("a volume server holding this object is down"),
        E::Volume(_) => S3Error::InternalError("a volume server failed"),
        E::Index(index::Error::Full) => S3Error::ServiceUnavailable("the index's disk is full"),
        E::Index(index::Error::Reopening) => S3Error::ServiceUnavailable("the index is reopening"),
        E::Index(_) | E::Internal(_) => S3Error::InternalError("the master failed"),
    }
}

/// Authenticates and runs one request.
async fn run(ctx: &store::Ctx, conn: &mut Conn, req: &Req<'_>, body: &mut Body) -> Result<Answer, Failure> {
    let now = now_secs();
    let keys = KEYS.get().and_then(Option::as_ref);
    let sreq = sigv4::Request { method: req.method, path: req.path, query: req.query, headers: req.headers };
    let verified = SIGNING.with(|c| sigv4::authenticate(&sreq, keys, &mut c.borrow_mut(), now))?;
    if keys.is_none() {
        // unsigned operation still honours a presigned URL's expiry
        expired(req.query, now)?;
    }
    let op = request::parse(req.method, req.path, req.query, &req.headers)?;
    dispatch(ctx, conn, req, body, op, verified).await
}

async fn dispatch(
    ctx: &store::Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    body: &mut Body,
    op: Op,
    verified: Verified,
) -> Result<Answer, Failure> {
    match op {
        Op::ListBuckets { prefix, max, after } => bucket::list_buckets(ctx, conn, req, &prefix, max, after),
        Op::CreateBucket { bucket } => bucket::create(ctx, conn, req, body, &bucket, verified).await,
        Op::HeadBucket { bucket } => bucket::head(ctx, conn, req, &bucket),
        Op::DeleteBucket { bucket } => {
            bucket::must_be_empty(ctx, &bucket)?;
            multipart::abort_all(ctx, &bucket).await?;
            bucket::delete(ctx, conn, req, &bucket)
        }
        Op::GetBucketLocation { bucket } => {
            let region = bucket::location(ctx, &bucket)?;
            Ok(ok(conn, req, 200, Some(xml::location_constraint(&region))))
        }
        Op::GetBucketVersioning { bucket } => {
            bucket::must_exist(ctx, &bucket)?;
            Ok(ok(conn, req, 200, Some(xml::versioning_configuration())))
        }
        Op::ListObjectsV1 { bucket, list, marker } => bucket::list_v1(ctx, conn, req, &bucket, &list, &marker),
        Op::ListObjectsV2 { bucket, list, continuation, start_after, fetch_owner } => {
            bucket::list_v2(ctx, conn, req, &bucket, &list, continuation, &start_after, fetch_owner)
        }
        Op::DeleteObjects { bucket } => bucket::delete_objects(ctx, conn, req, body, &bucket, verified).await,
        Op::PutObject { obj, meta, conditions } => {
            length_stated(req, &obj)?;
            object::put(ctx, conn, req, body, &obj, meta, &conditions, verified).await
        }
        Op::CopyObject { obj, source, meta, conditions, write_if } => {
            object::copy(ctx, conn, req, &obj, &source, meta, &conditions, &write_if).await
        }
        Op::GetObject { obj, read } => object::get(ctx, conn, req, &obj, &read).await,
        Op::HeadObject { obj, read } => object::head(ctx, conn, req, &obj, &read),
        Op::DeleteObject { obj, write_if } => object::delete(ctx, conn, req, &obj, &write_if).await,
        Op::CreateMultipartUpload { obj, meta } => multipart::create(ctx, conn, req, &obj, meta),
        Op::UploadPart { obj, upload_id, part } => {
            length_stated(req, &obj)?;
            multipart::upload_part(ctx, conn, req, body, &obj, &upload_id, part, verified).await
        }
        Op::UploadPartCopy { obj, upload_id, part, source, range, conditions } => {
            multipart::upload_part_copy(ctx, conn, req, &obj, &upload_id, part, &source, range, &conditions).await
        }
        Op::CompleteMultipartUpload { obj, upload_id, write_if } => {
            multipart::complete(ctx, conn, req, body, &obj, &upload_id, &write_if, verified).await
        }
        Op::AbortMultipartUpload { obj, upload_id } => multipart::abort(ctx, conn, req, &obj, &upload_id).await,
        Op::ListParts { obj, upload_id, max_parts, part_number_marker } => {
            multipart::list_parts(ctx, conn, req, &obj, &upload_id, max_parts, part_number_marker)
        }
        Op::ListMultipartUploads { bucket, list, key_marker, upload_id_marker } => {
            multipart::list_uploads(ctx, conn, req, &bucket, &list, &key_marker, &upload_id_marker)
        }
        Op::NotImplemented(what) => Err(S3Error::NotImplemented(what).into()),
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A presigned URL past its expiry, checked even when no signature is (no `-s3-keys`):
/// `X-Amz-Date` + `X-Amz-Expires` (SigV4) or `Expires` (SigV2, Unix seconds).
fn expired(query: &[u8], now: i64) -> Result<(), S3Error> {
    let q = request::Query::parse(query)?;
    let number = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok());
    let until = match (q.get("X-Amz-Date"), q.get("X-Amz-Expires"), q.get("Expires")) {
        (Some(d), Some(e), _) => crate::dates::parse_amz_date(d).zip(number(e)).map(|(d, e)| d + e),
        (_, _, Some(e)) if q.has("AWSAccessKeyId") => number(e),
        _ => None,
    };
    match until {
        Some(t) if now > t => Err(S3Error::AccessDenied("Request has expired")),
        _ => Ok(()),
    }
}

/// Reads a small request body whole (an XML document, at most `max` bytes) and checks it as
/// a PutObject's is: `x-amz-content-sha256` (a signature covers the body through it),
/// `Content-MD5`, and an `x-amz-checksum-*` header when `sums_of_body` (a Complete's
/// describe the object it makes, not its document). `aws-chunked` is refused (`what`).
pub async fn checked_body(
    conn: &mut Conn,
    req: &Req<'_>,
    body: &mut Body,
    verified: Verified,
    max: usize,
    sums_of_body: bool,
    what: &'static str,
) -> Result<Vec<u8>, Failure> {
    let object_sum = |name: &str| name.len() > 15 && name[..15].eq_ignore_ascii_case("x-amz-checksum-");
    let kept: Vec<httparse::Header> =
        req.headers.0.iter().filter(|h| sums_of_body || !object_sum(h.name)).copied().collect();
    let mut payload = super::payload::Payload::new(&Headers(&kept), verified, false)?;
    if payload.is_chunked() {
        return Err(S3Error::NotImplemented(what).into());
    }
    let doc = small_body(conn, body, max).await?;
    payload.observe(&doc)?;
    payload.finish()?;
    Ok(doc)
}

/// Reads a small request body whole (an XML document), at most `max` bytes.
async fn small_body(conn: &mut Conn, body: &mut Body, max: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    loop {
        match conn.body_chunk(body, 64 << 10).await {
            Ok(Some(c)) => {
                if out.len() + c.len() > max {
                    return Err(Failure { error: S3Error::EntityTooLarge, close: true });
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(super::body::http_failure(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn minio_py_is_not_answered_early() {
        use super::{reads_errors_in_200, Headers};
        let h = |ua: &'static str| vec![httparse::Header { name: "User-Agent", value: ua.as_bytes() }];
        assert!(reads_errors_in_200(&Headers(&h("Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux"))));
        assert!(reads_errors_in_200(&Headers(&h("rclone/v1.60.1-DEV"))));
        assert!(reads_errors_in_200(&Headers(&[])));
        assert!(!reads_errors_in_200(&Headers(&h("MinIO (Linux; x86_64) minio-py/7.2.20"))));
    }

    /// Two runtime threads never hand out the same request id.
    #[test]
    fn request_ids_are_unique_across_threads() {
        let ids: Vec<String> = (0..2)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| super::request_id()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "the same request id twice");
    }
}
