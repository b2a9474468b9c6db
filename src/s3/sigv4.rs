//! AWS Signature Version 4, verified: the `Authorization` header, presigned URLs, and the
//! chunk-signature chain of `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]` bodies.
//! (Version 2, which [`authenticate`] hands on to, is [`super::sigv2`].)
//!
//! [`authenticate`] checks a request head against the keys of `-s3-keys` and hands back a
//! [`Verified`]: who signed, what `x-amz-content-sha256` promised about the body, and for
//! signed streaming bodies the [`ChunkChain`] that [`super::payload::Payload`] verifies each
//! chunk with. The canonical request is built as S3 builds it: the path decoded and
//! re-encoded once (S3 does not double-encode), the query decoded, re-encoded and sorted,
//! header values trimmed with inner runs of spaces collapsed. Secrets and signing keys never
//! appear in an error or in `Debug` output.

use std::{collections::HashMap, fmt};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::error::S3Error;
use super::request::{percent_decode, Headers};
use crate::dates::{amz_date, parse_amz_date, parse_http_date};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's time may be from ours.
pub const MAX_SKEW: i64 = 15 * 60;
/// The longest a presigned URL may be valid (seven days, as S3).
pub const MAX_PRESIGN_EXPIRES: i64 = 7 * 24 * 3600;
/// SHA-256 of nothing, in hex: the fifth line of every chunk's string to sign.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Signing keys remembered per (access key, date, region): one per client and day.
const CACHE_SIZE: usize = 32;

/// A secret access key. It prints as `<redacted>`, so it cannot leak through `{:?}`.
#[derive(Clone)]
pub struct Secret(Box<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The access keys of `-s3-keys` and their secrets.
#[derive(Clone, Default)]
pub struct Keys(HashMap<String, Secret>);

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({} access keys)", self.0.len())
    }
}

impl Keys {
    /// Parses a keys file: one `ACCESS_KEY SECRET_KEY` per line; blank lines and `#`
    /// comments skipped. Errors name the line, never its content.
    pub fn parse(text: &str) -> Result<Keys, String> {
        let mut keys = Keys::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let (Some(access), Some(secret), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {}: expected ACCESS_KEY SECRET_KEY", n + 1));
            };
            if keys.0.insert(access.to_owned(), Secret(secret.into())).is_some() {
                return Err(format!("line {}: access key given twice", n + 1));
            }
        }
        if keys.0.is_empty() {
            return Err("no keys in the file".into());
        }
        Ok(keys)
    }

    #[cfg(test)]
    pub fn insert(&mut self, access: &str, secret: &str) {
        self.0.insert(access.to_owned(), Secret(secret.into()));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn secret(&self, access: &str) -> Option<&str> {
        self.0.get(access).map(|s| &*s.0)
    }
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Whether HMAC(key, data) is `claimed`, compared in constant time.
fn mac_matches(key: &[u8; 32], data: &[u8], claimed: &[u8; 32]) -> bool {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.verify_slice(claimed).is_ok()
}

/// The signing keys one runtime thread derived lately: deriving costs four HMACs, and a
/// client signs every request of a day with the same key. Belongs with one [`Keys`].
#[derive(Default)]
pub struct KeyCache(Vec<(String, String, [u8; 32])>);

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyCache({} keys)", self.0.len())
    }
}

impl KeyCache {
    fn key(&mut self, access: &str, secret: &str, scope: &Scope) -> [u8; 32] {
        let id = format!("{}/{}", scope.date, scope.region);
        if let Some(i) = self.0.iter().position(|(a, s, _)| a == access && *s == id) {
            let hit = self.0.remove(i);
            let key = hit.2;
            self.0.push(hit);
            return key;
        }
        let key = signing_key(secret, &scope.date, &scope.region, "s3");
        if self.0.len() >= CACHE_SIZE {
            self.0.remove(0);
        }
        self.0.push((access.to_owned(), id, key));
        key
    }
}

/// The request head as it arrived: `path` and `query` raw (percent-encoded), no `?`.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub headers: Headers<'a>,
}

/// What `x-amz-content-sha256` says the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentSha256 {
    /// No header (anonymous clients such as pyarrow's).
    Absent,
    Unsigned,
    /// The body's SHA-256, to be checked once the body has been read.
    Sha256([u8; 32]),
    /// `aws-chunked`: `signed` chunks carry `;chunk-signature=`; `trailer` bodies end with
    /// trailing headers (a checksum, and when signed `x-amz-trailer-signature`).
    Streaming {
        signed: bool,
        trailer: bool,
    },
}

impl ContentSha256 {
    pub fn from_headers(headers: &Headers) -> Result<ContentSha256, S3Error> {
        let Some(v) = headers.get("x-amz-content-sha256") else { return Ok(ContentSha256::Absent) };
        Ok(match v.trim_ascii() {
            b"UNSIGNED-PAYLOAD" => ContentSha256::Unsigned,
            b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => ContentSha256::Streaming { signed: true, trailer: false },
            b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => ContentSha256::Streaming { signed: true, trailer: true },
            b"STREAMING-UNSIGNED-PAYLOAD-TRAILER" => ContentSha256::Streaming { signed: false, trailer: true },
            v if v.starts_with(b"STREAMING-AWS4-ECDSA") => {
                return Err(S3Error::NotImplemented("SigV4a (ECDSA) signing"))
            }
            v => ContentSha256::Sha256(hex32(v).ok_or(S3Error::InvalidArgument(
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-… or a SHA-256 in hex",
            ))?),
        })
    }
}

/// What [`authenticate`] found.
#[derive(Debug)]
pub struct Verified {
    /// `None` when mkv runs without `-s3-keys` and so checks no signature. Read by the
    /// tests (which key signed); nothing else needs it yet, as no key has rights of its own.
    #[cfg_attr(not(test), allow(dead_code))]
    pub access_key: Option<String>,
    pub content: ContentSha256,
    /// For signed streaming bodies (when signatures are checked): the chain to verify them.
    pub chain: Option<ChunkChain>,
}

/// The credential scope: `date/region/s3/aws4_request`.
struct Scope {
    date: String,
    region: String,
}

impl Scope {
    fn text(&self) -> String {
        format!("{}/{}/s3/aws4_request", self.date, self.region)
    }
}

/// `ACCESS/20130524/us-east-1/s3/aws4_request` → (access key, scope).
fn parse_credential(c: &str, bad: S3Error) -> Result<(&str, Scope), S3Error> {
    let mut parts = c.rsplitn(5, '/');
    let (Some("aws4_request"), Some(service), Some(region), Some(date), Some(access)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad);
    };
    if service != "s3"
        || region.is_empty()
        || access.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad);
    }
    Ok((access, Scope { date: date.to_owned(), region: region.to_owned() }))
}

/// Checks the request's signature. Without `keys` (no `-s3-keys`), every request is
/// accepted, signed or not, as minikeyvalue does; the body's promises are still read.
/// `now` is Unix seconds.
pub fn authenticate(req: &Request, keys: Option<&Keys>, cache: &mut KeyCache, now: i64) -> Result<Verified, S3Error> {
    let content = ContentSha256::from_headers(&req.headers)?;
    let Some(keys) = keys else { return Ok(Verified { access_key: None, content, chain: None }) };
    let presigned = query_has(req.query, b"X-Amz-Signature")
        || query_has(req.query, b"X-Amz-Algorithm")
        || query_has(req.query, b"AWSAccessKeyId");
    if presigned && req.headers.has("authorization") {
        return Err(S3Error::InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        ));
    }
    match req.headers.get("authorization") {
        Some(a) if a.starts_with(b"AWS4-HMAC-SHA256 ") => header_auth(req, &a[17..], keys, cache, now, content),
        Some(a) if a.starts_with(b"AWS ") => super::sigv2::header_auth(req, &a[4..], keys, now, content),
        Some(_) => Err(S3Error::AccessDenied("unsupported Authorization scheme")),
        None if query_has(req.query, b"X-Amz-Signature") || query_has(req.query, b"X-Amz-Algorithm") => {
            presigned_auth(req, keys, cache, now, content)
        }
        None if query_has(req.query, b"AWSAccessKeyId") => super::sigv2::presigned_auth(req, keys, now, content),
        None => Err(S3Error::AccessDenied("Anonymous access is not allowed: this server requires signed requests")),
    }
}

fn query_has(query: &[u8], name: &[u8]) -> bool {
    query.split(|&b| b == b'&').any(|p| p.split(|&b| b == b'=').next() == Some(name))
}

fn header_auth(
    req: &Request,
    auth: &[u8],
    keys: &Keys,
    cache: &mut KeyCache,
    now: i64,
    content: ContentSha256,
) -> Result<Verified, S3Error> {
    const BAD: S3Error = S3Error::AuthorizationHeaderMalformed("The authorization header is malformed.");
    let auth = std::str::from_utf8(auth).map_err(|_| BAD)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in auth.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(BAD),
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else { return Err(BAD) };
    let (access, scope) = parse_credential(credential, BAD)?;
    let signature = hex32(signature.as_bytes()).ok_or(S3Error::SignatureDoesNotMatch)?;
    let secret = keys.secret(access).ok_or(S3Error::InvalidAccessKeyId)?;
    // the time signed: x-amz-date, or the Date header when there is none
    let (time, stamp) = match req.headers.get("x-amz-date") {
        Some(d) => (parse_amz_date(d.trim_ascii()), String::from_utf8_lossy(d.trim_ascii()).into_owned()),
        None => match req.headers.get("date").and_then(parse_http_date) {
            Some(t) => (Some(t), amz_date(t)),
            None => (None, String::new()),
        },
    };
    let time = time.ok_or(S3Error::AccessDenied("AWS authentication requires a valid Date or x-amz-date header"))?;
    if (now - time).abs() > MAX_SKEW {
        return Err(S3Error::RequestTimeTooSkewed);
    }
    if stamp.get(..8) != Some(scope.date.as_str()) {
        return Err(S3Error::AuthorizationHeaderMalformed(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    let signed: Vec<&str> = signed.split(';').collect();
    if !signed.contains(&"host") {
        return Err(S3Error::AccessDenied("the Host header must be signed"));
    }
    let Some(payload) = req.headers.get("x-amz-content-sha256") else {
        return Err(S3Error::InvalidRequest("Missing required header for this request: x-amz-content-sha256"));
    };
    if !signed.contains(&"x-amz-content-sha256") {
        return Err(S3Error::AccessDenied("x-amz-content-sha256 must be signed"));
    }
    all_amz_signed(&req.headers, &signed)?;
    let key = cache.key(access, secret, &scope);
    let query = canonical_query(req.query, false)?;
    verify(req, &query, &signed, payload.trim_ascii(), &key, &stamp, &scope, &signature)?;
    let chain = match content {
        ContentSha256::Streaming { signed: true, .. } => {
            Some(ChunkChain { key, stamp, scope: scope.text(), prev: signature })
        }
        _ => None,
    };
    Ok(Verified { access_key: Some(access.to_owned()), content, chain })
}

fn presigned_auth(
    req: &Request,
    keys: &Keys,
    cache: &mut KeyCache,
    now: i64,
    content: ContentSha256,
) -> Result<Verified, S3Error> {
    use S3Error::AuthorizationQueryParametersError as Bad;
    let mut params: HashMap<&[u8], Vec<u8>> = HashMap::new();
    for pair in req.query.split(|&b| b == b'&') {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        if name.starts_with(b"X-Amz-") {
            params.insert(name, percent_decode(value, true).ok_or(Bad("a presigned parameter is badly encoded"))?);
        }
    }
    let text = |name: &str| params.get(name.as_bytes()).and_then(|v| std::str::from_utf8(v).ok());
    if text("X-Amz-Algorithm") != Some("AWS4-HMAC-SHA256") {
        return Err(Bad("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""));
    }
    let missing = Bad("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.");
    let (Some(credential), Some(stamp), Some(expires), Some(signed), Some(signature)) = (
        text("X-Amz-Credential"),
        text("X-Amz-Date"),
        text("X-Amz-Expires"),
        text("X-Amz-SignedHeaders"),
        text("X-Amz-Signature"),
    ) else {
        return Err(missing);
    };
    let (access, scope) = parse_credential(credential, Bad("Error parsing the X-Amz-Credential parameter"))?;
    let time = parse_amz_date(stamp.as_bytes())
        .ok_or(Bad("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""))?;
    let expires: i64 = expires
        .parse()
        .ok()
        .filter(|e| (1..=MAX_PRESIGN_EXPIRES).contains(e))
        .ok_or(Bad("X-Amz-Expires must be a number of seconds between 1 and 604800"))?;
    if stamp.get(..8) != Some(scope.date.as_str()) {
        return Err(Bad("Invalid credential date. Date is not the same as X-Amz-Date."));
    }
    let signature = hex32(signature.as_bytes()).ok_or(S3Error::SignatureDoesNotMatch)?;
    let secret = keys.secret(access).ok_or(S3Error::InvalidAccessKeyId)?;
    if time - now > MAX_SKEW {
        return Err(S3Error::AccessDenied("Request is not valid yet"));
    }
    if now > time + expires {
        return Err(S3Error::AccessDenied("Request has expired"));
    }
    let signed: Vec<&str> = signed.split(';').collect();
    if !signed.contains(&"host") {
        return Err(S3Error::AccessDenied("the Host header must be signed"));
    }
    all_amz_signed(&req.headers, &signed)?;
    let payload = params.get(&b"X-Amz-Content-Sha256"[..]).map_or(&b"UNSIGNED-PAYLOAD"[..], |v| v.as_slice());
    let key = cache.key(access, secret, &scope);
    let query = canonical_query(req.query, true)?;
    verify(req, &query, &signed, payload, &key, stamp, &scope, &signature)?;
    // a body's hash signed in the query binds the URL to that body, as the header's would
    // (it was signed, and any body taken)
    let content = match (hex32(payload), content) {
        (Some(h), ContentSha256::Sha256(sent)) if sent != h => return Err(S3Error::ContentSha256Mismatch),
        (Some(h), ContentSha256::Absent | ContentSha256::Unsigned) => ContentSha256::Sha256(h),
        (_, content) => content,
    };
    Ok(Verified { access_key: Some(access.to_owned()), content, chain: None })
}

/// Every `x-amz-*` header the request carries must be among those signed, as S3 has it: the
/// master acts on them (`x-amz-copy-source` turns a PUT into a copy, `x-amz-meta-*` is
/// stored), so one added to a signed request after the fact would change what it does.
fn all_amz_signed(headers: &Headers, signed: &[&str]) -> Result<(), S3Error> {
    let unsigned = headers.iter().any(|(name, _)| {
        name.len() > 6
            && name[..6].eq_ignore_ascii_case("x-amz-")
            && !signed.iter().any(|s| s.eq_ignore_ascii_case(name))
    });
    if unsigned {
        return Err(S3Error::AccessDenied("There were headers present in the request which were not signed"));
    }
    Ok(())
}

/// Recomputes the signature over the canonical request and compares. The path is tried as
/// S3 canonicalizes it (decoded, encoded once) and, when that differs, as sent: a client
/// that signs a character it left unencoded (`!`, `'`, `*`, …) signed what it sent.
#[allow(clippy::too_many_arguments)]
fn verify(
    req: &Request,
    query: &str,
    signed: &[&str],
    payload: &[u8],
    key: &[u8; 32],
    stamp: &str,
    scope: &Scope,
    signature: &[u8; 32],
) -> Result<(), S3Error> {
    let headers = canonical_headers(&req.headers, signed);
    let signed = signed.join(";");
    let decoded = percent_decode(req.path, false).ok_or(S3Error::InvalidURI)?;
    let mut uri = String::with_capacity(req.path.len() * 3);
    uri_encode(&mut uri, &decoded, false);
    let mut candidates = vec![uri];
    if let Ok(raw) = std::str::from_utf8(req.path) {
        if raw != candidates[0] {
            candidates.push(raw.to_owned());
        }
    }
    let scope = scope.text();
    for uri in candidates {
        let creq = canonical_request(req.method, &uri, query, &headers, &signed, payload);
        if mac_matches(key, string_to_sign(stamp, &scope, &creq).as_bytes(), signature) {
            return Ok(());
        }
    }
    Err(S3Error::SignatureDoesNotMatch)
}

fn canonical_request(method: &str, uri: &str, query: &str, headers: &str, signed: &str, payload: &[u8]) -> String {
    format!("{method}\n{uri}\n{query}\n{headers}\n{signed}\n{}", String::from_utf8_lossy(payload))
}

fn string_to_sign(stamp: &str, scope: &str, canonical_request: &str) -> String {
    format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", hex(&Sha256::digest(canonical_request.as_bytes())))
}

/// `name:value\n` for each signed header, in the order signed: every value the request
/// carries under that name, each trimmed with inner runs of spaces collapsed, joined by `,`.
fn canonical_headers(headers: &Headers, signed: &[&str]) -> String {
    let mut out = String::new();
    for name in signed {
        out.push_str(name);
        out.push(':');
        // a Content-Length sent twice alike (rclone's presigned PUTs do; RFC 9110 lets a
        // recipient take it as one) was signed once
        let repeats = if name.eq_ignore_ascii_case("content-length") { 1 } else { usize::MAX };
        for (i, value) in headers.get_all(name).take(repeats).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let value = String::from_utf8_lossy(value);
            let mut words = value.split_ascii_whitespace();
            if let Some(first) = words.next() {
                out.push_str(first);
            }
            for w in words {
                out.push(' ');
                out.push_str(w);
            }
        }
        out.push('\n');
    }
    out
}

/// The query decoded, each name and value encoded as SigV4 wants, sorted by name then value.
/// A presigned URL's own `X-Amz-Signature` is left out.
fn canonical_query(raw: &[u8], presigned: bool) -> Result<String, S3Error> {
    let mut pairs = Vec::new();
    for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        if presigned && name == b"X-Amz-Signature" {
            continue;
        }
        let (mut n, mut v) = (String::new(), String::new());
        uri_encode(&mut n, &percent_decode(name, true).ok_or(S3Error::InvalidURI)?, true);
        uri_encode(&mut v, &percent_decode(value, true).ok_or(S3Error::InvalidURI)?, true);
        pairs.push((n, v));
    }
    pairs.sort();
    let mut out = String::new();
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(n);
        out.push('=');
        out.push_str(v);
    }
    Ok(out)
}

/// SigV4's URI encoding: unreserved characters as they are, `/` too in a path, every other
/// byte as `%XX` with upper-case hex.
fn uri_encode(out: &mut String, bytes: &[u8], encode_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !encode_slash) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|&b| [HEX[(b >> 4) as usize] as char, HEX[(b & 15) as usize] as char]).collect()
}

/// 64 hex digits → 32 bytes.
pub fn hex32(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let h = (pair[0] as char).to_digit(16)?;
        let l = (pair[1] as char).to_digit(16)?;
        *o = (h * 16 + l) as u8;
    }
    Some(out)
}

/// The signature chain of a signed `aws-chunked` body: each chunk's signature signs its
/// data's SHA-256 and the signature before it, starting from the request's (the seed).
pub struct ChunkChain {
    key: [u8; 32],
    stamp: String,
    scope: String,
    prev: [u8; 32],
}

impl fmt::Debug for ChunkChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkChain {{ scope: {:?}, prev: {} }}", self.scope, hex(&self.prev))
    }
}

impl ChunkChain {
    /// Checks one chunk's `chunk-signature` against the SHA-256 of its data (the final,
    /// empty chunk included), and moves the chain on.
    pub fn verify_chunk(&mut self, data_sha256: &[u8; 32], claimed: &[u8; 32]) -> Result<(), S3Error> {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.stamp,
            self.scope,
            hex(&self.prev),
            hex(data_sha256)
        );
        if !mac_matches(&self.key, sts.as_bytes(), claimed) {
            return Err(S3Error::SignatureDoesNotMatch);
        }
        self.prev = *claimed;
        Ok(())
    }

    /// Checks `x-amz-trailer-signature` against the trailing headers in canonical form
    /// (`name:value\n` each, as received), chained to the final chunk's signature.
    pub fn verify_trailer(&mut self, canonical: &[u8], claimed: &[u8; 32]) -> Result<(), S3Error> {
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.stamp,
            self.scope,
            hex(&self.prev),
            hex(&Sha256::digest(canonical))
        );
        if !mac_matches(&self.key, sts.as_bytes(), claimed) {
            return Err(S3Error::SignatureDoesNotMatch);
        }
        self.prev = *claimed;
        Ok(())
    }

    /// What a client with this key would sign a chunk with (tests build bodies with it).
    #[cfg(test)]
    pub fn sign_chunk(&mut self, data: &[u8]) -> [u8; 32] {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.stamp,
            self.scope,
            hex(&self.prev),
            hex(&Sha256::digest(data))
        );
        self.prev = hmac(&self.key, sts.as_bytes());
        self.prev
    }

    #[cfg(test)]
    pub fn sign_trailer(&mut self, canonical: &[u8]) -> [u8; 32] {
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.stamp,
            self.scope,
            hex(&self.prev),
            hex(&Sha256::digest(canonical))
        );
        self.prev = hmac(&self.key, sts.as_bytes());
        self.prev
    }

    /// A chain as a client holding `secret` starts it, for tests of bodies.
    #[cfg(test)]
    pub fn for_test(secret: &str, stamp: &str, region: &str, seed: [u8; 32]) -> ChunkChain {
        let scope = Scope { date: stamp[..8].to_owned(), region: region.to_owned() };
        ChunkChain {
            key: signing_key(secret, &scope.date, region, "s3"),
            stamp: stamp.to_owned(),
            scope: scope.text(),
            prev: seed,
        }
    }
}

#[cfg(test)]
mod tests;
