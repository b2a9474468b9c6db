//! What an object request's headers ask for besides the bytes: the metadata to keep, the
//! preconditions, the byte range, the copy source. Pure parsing, shared by request.rs.

use super::error::S3Error;
use super::request::{percent_decode, reachable_bucket, Headers, Object, MAX_KEY};

/// The most user metadata one object may carry, counted as S3 counts it: the bytes of each
/// `x-amz-meta-` name (without that prefix) and its value. Standard headers do not count.
pub const MAX_METADATA: usize = 2048;
/// The longest name of a kept header (the stored record gives a name one length byte).
const MAX_NAME: usize = 255;

/// Standard headers S3 keeps with an object and answers GET/HEAD with.
const KEPT: [&str; 6] =
    ["content-type", "cache-control", "content-disposition", "content-encoding", "content-language", "expires"];

/// The headers kept with an object: lower-case names, values as sent (trimmed).
/// `Content-Encoding` is kept without its `aws-chunked` token, which only framed the upload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    pub fn from_headers(headers: &Headers) -> Result<Metadata, S3Error> {
        let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, value) in headers.iter() {
            let lower = name.to_ascii_lowercase();
            let mut value = value.trim_ascii().to_vec();
            if lower == "content-encoding" {
                let rest: Vec<&[u8]> = value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"aws-chunked"))
                    .collect();
                value = rest.join(&b","[..]);
                if value.is_empty() {
                    continue;
                }
            } else if !(KEPT.contains(&lower.as_str()) || (lower.starts_with("x-amz-meta-") && lower.len() > 11)) {
                continue;
            }
            // a repeated header is one value, comma-joined, as HTTP has it
            match kept.iter_mut().find(|(n, _)| *n == lower) {
                Some((_, v)) => {
                    v.push(b',');
                    v.extend_from_slice(&value);
                }
                None => kept.push((lower, value)),
            }
        }
        let user = kept.iter().filter_map(|(n, v)| n.strip_prefix("x-amz-meta-").map(|n| n.len() + v.len()));
        if user.sum::<usize>() > MAX_METADATA || kept.iter().any(|(n, _)| n.len() > MAX_NAME) || !fits(&kept) {
            return Err(S3Error::MetadataTooLarge);
        }
        Ok(Metadata { headers: kept })
    }

    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    #[cfg(test)]
    pub fn content_type(&self) -> Option<&[u8]> {
        self.get("content-type")
    }
}

/// Whether `kept` fits the record with a multipart ETag beside it ([`super::stored::Stored`]'s
/// encoding: a version byte, the ETag with its length, a count byte, then each name with a
/// length byte and each value with two), at most 255 headers: the record keeps at most
/// [`crate::record::MAX_META`] bytes, and more would be cut, losing every header.
fn fits(kept: &[(String, Vec<u8>)]) -> bool {
    const ETAG_ROOM: usize = 3 + 64;
    let size: usize = kept.iter().map(|(n, v)| 3 + n.len() + v.len()).sum();
    kept.len() <= 255 && ETAG_ROOM + size <= crate::record::MAX_META
}

/// `x-amz-metadata-directive` of a CopyObject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataDirective {
    Copy,
    Replace,
}

impl MetadataDirective {
    pub fn from_headers(headers: &Headers) -> Result<MetadataDirective, S3Error> {
        match headers.get("x-amz-metadata-directive").map(<[u8]>::trim_ascii) {
            None | Some(b"COPY") => Ok(MetadataDirective::Copy),
            Some(b"REPLACE") => Ok(MetadataDirective::Replace),
            Some(_) => Err(S3Error::InvalidArgument("Unknown metadata directive.")),
        }
    }
}

/// The preconditions of a request (`If-Match` …, or for a copy `x-amz-copy-source-if-match` …).
/// An HTTP date that does not parse is ignored, as RFC 9110 says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conditions {
    pub if_match: Option<Vec<u8>>,
    pub if_none_match: Option<Vec<u8>>,
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
}

impl Conditions {
    /// Reads `{prefix}if-match` and its kin: `prefix` is `""` or `"x-amz-copy-source-"`.
    pub fn from_headers(headers: &Headers, prefix: &str) -> Conditions {
        let get = |name: &str| headers.get(&format!("{prefix}{name}")).map(|v| v.trim_ascii().to_vec());
        let date = |name: &str| headers.get(&format!("{prefix}{name}")).and_then(crate::dates::parse_http_date);
        Conditions {
            if_match: get("if-match"),
            if_none_match: get("if-none-match"),
            if_modified_since: date("if-modified-since"),
            if_unmodified_since: date("if-unmodified-since"),
        }
    }

    /// A write's own conditions: `If-Match` and `If-None-Match` (S3 reads no date on a write).
    pub fn for_write(headers: &Headers) -> Conditions {
        let c = Conditions::from_headers(headers, "");
        Conditions { if_match: c.if_match, if_none_match: c.if_none_match, ..Conditions::default() }
    }

    /// A delete's: `If-Match` only, as S3 reads it.
    pub fn for_delete(headers: &Headers) -> Conditions {
        Conditions { if_match: Conditions::from_headers(headers, "").if_match, ..Conditions::default() }
    }

    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// Checks the conditions against an existing object (`etag` unquoted, `modified` in Unix
    /// seconds), in RFC 9110's order (§13.2.2). `read` is true for GET/HEAD, where a failed
    /// `If-None-Match`/`If-Modified-Since` is `304`; for writes and copy sources it is `412`.
    pub fn check(&self, etag: &str, modified: i64, read: bool) -> Result<(), S3Error> {
        let not_modified = if read { S3Error::NotModified } else { S3Error::PreconditionFailed };
        if let Some(m) = &self.if_match {
            if !etag_matches(m, etag, Compare::Strong) {
                return Err(S3Error::PreconditionFailed);
            }
        } else if self.if_unmodified_since.is_some_and(|t| modified > t) {
            return Err(S3Error::PreconditionFailed);
        }
        if let Some(m) = &self.if_none_match {
            if etag_matches(m, etag, Compare::Weak) {
                return Err(not_modified);
            }
        } else if self.if_modified_since.is_some_and(|t| modified <= t) {
            return Err(not_modified);
        }
        Ok(())
    }
}

/// How an entity tag is compared (RFC 9110 §8.8.3.2): `If-Match` strongly (a weak tag
/// never matches), `If-None-Match` weakly. mkv's own ETags are all strong.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    Strong,
    Weak,
}

/// Whether an `If-Match`/`If-None-Match` list (`*`, or quoted tags) names `etag`.
fn etag_matches(list: &[u8], etag: &str, how: Compare) -> bool {
    list.split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|t| {
        let t = match t.strip_prefix(b"W/") {
            Some(_) if how == Compare::Strong => return false,
            Some(weak) => weak,
            None => t,
        };
        let t = t.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")).unwrap_or(t);
        t == b"*" || t == etag.as_bytes()
    })
}

/// One byte range of a `Range: bytes=…` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-` or `first-last` (inclusive).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// `None` for a header to ignore: not `bytes=`, malformed, or several ranges (S3 serves
    /// one range per GET; RFC 9110 lets a server ignore a Range it does not serve).
    pub fn parse(v: &[u8]) -> Option<ByteRange> {
        let spec = v.trim_ascii().strip_prefix(b"bytes=")?.trim_ascii();
        let dash = spec.iter().position(|&b| b == b'-')?;
        // digits only; a number past u64 is as good as u64::MAX (a last byte past any size
        // means the end, a first one past it is unsatisfiable: 416), not a header to ignore
        let num = crate::http::decimal;
        let (a, b) = (&spec[..dash], &spec[dash + 1..]);
        if a.is_empty() {
            return Some(ByteRange::Suffix(num(b)?));
        }
        let first = num(a)?;
        let last = if b.is_empty() { None } else { Some(num(b)?) };
        if last.is_some_and(|l| l < first) {
            return None;
        }
        Some(ByteRange::From { first, last })
    }

    /// The first and last byte (inclusive) of this range of an object of `size` bytes;
    /// `416 InvalidRange` when no byte of it exists.
    pub fn resolve(&self, size: u64) -> Result<(u64, u64), S3Error> {
        match *self {
            ByteRange::From { first, last } if first < size => Ok((first, last.map_or(size - 1, |l| l.min(size - 1)))),
            ByteRange::Suffix(n) if n > 0 && size > 0 => Ok((size - n.min(size), size - 1)),
            _ => Err(S3Error::InvalidRange),
        }
    }
}

/// `If-Range`: the object a client holds part of, by its ETag or its Last-Modified date.
/// The Range is served only while the object is still that one; otherwise the answer is
/// the whole object (RFC 9110 §13.1.5), so that the client never joins bytes of two values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfRange(Vec<u8>);

impl IfRange {
    pub fn parse(v: &[u8]) -> IfRange {
        IfRange(v.trim_ascii().to_vec())
    }

    /// Whether the object (`etag` unquoted, `modified` in Unix seconds) is the one named:
    /// a strong ETag equal to its own, or a date equal to its Last-Modified. A weak ETag or
    /// a value that is neither never matches.
    pub fn holds(&self, etag: &str, modified: i64) -> bool {
        match self.0.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")) {
            Some(tag) => tag == etag.as_bytes(),
            None => crate::dates::parse_http_date(&self.0) == Some(modified),
        }
    }
}

/// `x-amz-copy-source: [/]bucket/key[?versionId=…]`, percent-encoded. mkv keeps no
/// versions: a `versionId` other than `null` names nothing.
pub fn copy_source(v: &[u8]) -> Result<Object, S3Error> {
    const BAD: S3Error = S3Error::InvalidArgument("Invalid copy source: it must be bucket/key, URL-encoded");
    let v = v.trim_ascii();
    let (path, query) = match v.iter().position(|&b| b == b'?') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix(b"versionId=") {
            Some(b"null") => {}
            Some(_) => return Err(S3Error::NoSuchVersion),
            None => return Err(BAD),
        }
    }
    let path = percent_decode(path, false).ok_or(BAD)?;
    let path = path.strip_prefix(b"/").unwrap_or(&path);
    let slash = path.iter().position(|&b| b == b'/').ok_or(BAD)?;
    let (bucket, key) = (&path[..slash], &path[slash + 1..]);
    let bucket = std::str::from_utf8(bucket).ok().filter(|b| reachable_bucket(b)).ok_or(BAD)?;
    if key.is_empty() {
        return Err(BAD);
    }
    if key.len() > MAX_KEY {
        return Err(S3Error::KeyTooLong);
    }
    Ok(Object { bucket: bucket.to_owned(), key: key.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        list.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect()
    }

    #[test]
    fn metadata_kept() {
        let h = hdrs(&[
            ("Content-Type", "text/plain"),
            ("X-Amz-Meta-Color", " blue "),
            ("x-amz-meta-color", "red"),
            ("Content-Encoding", "aws-chunked"),
            ("Authorization", "AWS4-HMAC-SHA256 …"),
            ("x-amz-meta-", "nameless"),
            ("Cache-Control", "no-cache"),
        ]);
        let m = Metadata::from_headers(&Headers(&h)).unwrap();
        assert_eq!(
            m.headers,
            vec![
                ("content-type".into(), b"text/plain".to_vec()),
                ("x-amz-meta-color".into(), b"blue,red".to_vec()),
                ("cache-control".into(), b"no-cache".to_vec()),
            ]
        );
        assert_eq!(m.content_type(), Some(&b"text/plain"[..]));
        let h = hdrs(&[("Content-Encoding", "aws-chunked, gzip")]);
        assert_eq!(Metadata::from_headers(&Headers(&h)).unwrap().get("content-encoding"), Some(&b"gzip"[..]));
        let big = "v".repeat(MAX_METADATA);
        let list = [("x-amz-meta-big", big.as_str())];
        let h = hdrs(&list);
        assert_eq!(Metadata::from_headers(&Headers(&h)), Err(S3Error::MetadataTooLarge));
    }

    #[test]
    fn the_metadata_limit_counts_user_names_and_values_only() {
        // S3's count: "k" and 2,047 bytes make 2 KiB exactly, with a Content-Type beside
        let at = "v".repeat(MAX_METADATA - 1);
        let list = [("x-amz-meta-k", at.as_str()), ("Content-Type", "application/octet-stream")];
        let h = hdrs(&list);
        assert!(Metadata::from_headers(&Headers(&h)).is_ok());
        let over = "v".repeat(MAX_METADATA);
        let list = [("x-amz-meta-k", over.as_str())];
        let h = hdrs(&list);
        assert_eq!(Metadata::from_headers(&Headers(&h)), Err(S3Error::MetadataTooLarge));
        // a name the record could not keep whole is refused, not cut
        let long = format!("x-amz-meta-{}", "n".repeat(MAX_NAME));
        let list = [(long.as_str(), "v")];
        let h = hdrs(&list);
        assert_eq!(Metadata::from_headers(&Headers(&h)), Err(S3Error::MetadataTooLarge));
        // standard headers are not user metadata, but the record must hold them all
        let big = "d".repeat(9000);
        let list = [("Content-Disposition", big.as_str()), ("x-amz-meta-colour", "blue")];
        let h = hdrs(&list);
        assert_eq!(Metadata::from_headers(&Headers(&h)), Err(S3Error::MetadataTooLarge));
        let names: Vec<String> = (0..256).map(|i| format!("x-amz-meta-{i}")).collect();
        let list: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let h = hdrs(&list);
        assert_eq!(Metadata::from_headers(&Headers(&h)), Err(S3Error::MetadataTooLarge), "256 headers");
        let list = &list[..255];
        let h = hdrs(list);
        let m = Metadata::from_headers(&Headers(&h)).expect("255 headers fit");
        let stored = super::super::stored::Stored { etag: Some("e".repeat(40)), headers: m.headers.clone() };
        assert_eq!(super::super::stored::Stored::decode(&stored.encode()).headers, m.headers);
    }

    #[test]
    fn conditions() {
        let h = hdrs(&[("If-Match", "\"abc\""), ("If-Modified-Since", "Fri, 24 May 2013 00:00:00 GMT")]);
        let c = Conditions::from_headers(&Headers(&h), "");
        assert_eq!(c.if_modified_since, Some(1369353600));
        // If-Match holds: If-Unmodified-Since is not consulted; If-Modified-Since is
        assert_eq!(c.check("abc", 1369353600, true), Err(S3Error::NotModified));
        assert_eq!(c.check("abc", 1369353601, true), Ok(()));
        assert_eq!(c.check("abd", 1369353601, true), Err(S3Error::PreconditionFailed));
        let c = Conditions { if_none_match: Some(b"W/\"x\", \"abc\"".to_vec()), ..Default::default() };
        assert_eq!(c.check("abc", 0, true), Err(S3Error::NotModified));
        assert_eq!(c.check("abc", 0, false), Err(S3Error::PreconditionFailed));
        assert_eq!(c.check("x", 0, true), Err(S3Error::NotModified));
        assert_eq!(c.check("y", 0, true), Ok(()));
        let c = Conditions { if_none_match: Some(b"*".to_vec()), ..Default::default() };
        assert_eq!(c.check("any", 0, false), Err(S3Error::PreconditionFailed));
        // If-Match compares strongly (RFC 9110 §13.1.1): a weak tag never holds, on a read or
        // a conditional write (it did, and replaced the object)
        let c = Conditions { if_match: Some(b"W/\"abc\"".to_vec()), ..Default::default() };
        assert_eq!(c.check("abc", 0, true), Err(S3Error::PreconditionFailed));
        assert_eq!(c.check("abc", 0, false), Err(S3Error::PreconditionFailed));
        let c = Conditions { if_match: Some(b"W/\"abc\", \"abc\"".to_vec()), ..Default::default() };
        assert_eq!(c.check("abc", 0, false), Ok(()));
        let c = Conditions { if_unmodified_since: Some(100), ..Default::default() };
        assert_eq!(c.check("e", 101, true), Err(S3Error::PreconditionFailed));
        assert_eq!(c.check("e", 100, true), Ok(()));
        let h = hdrs(&[("x-amz-copy-source-if-match", "\"e\""), ("If-Modified-Since", "garbage")]);
        let c = Conditions::from_headers(&Headers(&h), "x-amz-copy-source-");
        assert_eq!(c, Conditions { if_match: Some(b"\"e\"".to_vec()), ..Default::default() });
        assert!(Conditions::from_headers(&Headers(&h), "").is_empty());
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(ByteRange::parse(b"bytes=0-9"), Some(From { first: 0, last: Some(9) }));
        assert_eq!(ByteRange::parse(b"bytes=5-"), Some(From { first: 5, last: None }));
        // u64::MAX and past it: the end of any object, not an ignored header
        for last in [&b"18446744073709551615"[..], b"99999999999999999999999"] {
            let r = ByteRange::parse(&[&b"bytes=0-"[..], last].concat()).unwrap();
            assert_eq!(r.resolve(10).unwrap(), (0, 9));
        }
        let far = ByteRange::parse(b"bytes=99999999999999999999999-").unwrap();
        assert!(far.resolve(10).is_err(), "a first byte past any size is 416");
        assert_eq!(ByteRange::parse(b"bytes=-3"), Some(Suffix(3)));
        for ignored in [&b"bytes=9-0"[..], b"bytes=0-1,3-4", b"items=0-1", b"bytes=a-b", b"bytes=-", b"bytes=1"] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored:?}");
        }
        assert_eq!(From { first: 0, last: Some(9) }.resolve(5), Ok((0, 4)));
        assert_eq!(From { first: 5, last: None }.resolve(5), Err(S3Error::InvalidRange));
        assert_eq!(From { first: 0, last: None }.resolve(0), Err(S3Error::InvalidRange));
        assert_eq!(Suffix(3).resolve(10), Ok((7, 9)));
        assert_eq!(Suffix(30).resolve(10), Ok((0, 9)));
        assert_eq!(Suffix(0).resolve(10), Err(S3Error::InvalidRange));
        assert_eq!(Suffix(1).resolve(0), Err(S3Error::InvalidRange));
    }

    #[test]
    fn copy_sources() {
        let o = |b: &str, k: &[u8]| Object { bucket: b.into(), key: k.to_vec() };
        assert_eq!(copy_source(b"/src/a%20b/c%3Fd"), Ok(o("src", b"a b/c?d")));
        assert_eq!(copy_source(b"src/k+1?versionId=null"), Ok(o("src", b"k+1")));
        assert_eq!(copy_source(b"src/k?versionId=3HL4kqtJlcpXroDTDmJ"), Err(S3Error::NoSuchVersion));
        // a legacy bucket name is a source too (native keys such as /My_Photos/k)
        assert_eq!(copy_source(b"My_Photos/k"), Ok(o("My_Photos", b"k")));
        for bad in [&b"src"[..], b"/src/", b"a%20b/k", b"src/k?foo=1", b"src/%zz"] {
            assert!(matches!(copy_source(bad), Err(S3Error::InvalidArgument(_))), "{bad:?}");
        }
    }
}
