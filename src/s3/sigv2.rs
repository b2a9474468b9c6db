//! AWS Signature Version 2, verified: `Authorization: AWS ACCESS:SIGNATURE` and presigned
//! `?AWSAccessKeyId=&Expires=&Signature=` URLs, each an HMAC-SHA1 of the string to sign.
//! botocore presigns with it by default for an endpoint of one's own (`generate_presigned_url`
//! without `signature_version='s3v4'`), and older tools sign every request with it.
//!
//! The string to sign, as S3 builds it: the method, `Content-MD5`, `Content-Type`, the date
//! (`Date`, empty when `x-amz-date` is sent, or `Expires` for a presigned URL), every
//! `x-amz-*` header (`name:value`, names lower-cased and sorted, values trimmed, repeats
//! joined by `,`), then the resource: the path as sent, with the sub-resources of the query
//! (S3's list, sorted by name, values decoded). SigV2 signs no body: the body's own checksums
//! (`Content-MD5`, `x-amz-checksum-*`) are still checked by the payload pipeline.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::error::S3Error;
use super::request::{percent_decode, Headers};
use super::sigv4::{ContentSha256, Keys, Request, Verified, MAX_SKEW};
use crate::dates::{parse_amz_date, parse_http_date};

type HmacSha1 = Hmac<Sha1>;

/// The query parameters that are part of the signed resource (botocore's list, a superset
/// of the one in S3's SigV2 documentation).
#[rustfmt::skip]
const SUB_RESOURCES: &[&str] = &[
    "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory", "lifecycle", "location",
    "logging", "metrics", "notification", "object-lock", "partNumber", "policy", "replication", "requestPayment",
    "response-cache-control", "response-content-disposition", "response-content-encoding", "response-content-language",
    "response-content-type", "response-expires", "restore", "select", "select-type", "storageClass", "tagging",
    "torrent", "uploadId", "uploads", "versionId", "versioning", "versions", "website",
];

/// `Authorization: AWS ACCESS:SIGNATURE` (`auth` is what follows `AWS `).
pub fn header_auth(
    req: &Request,
    auth: &[u8],
    keys: &Keys,
    now: i64,
    content: ContentSha256,
) -> Result<Verified, S3Error> {
    const BAD: S3Error = S3Error::AuthorizationHeaderMalformed("The authorization header is malformed.");
    let auth = std::str::from_utf8(auth).map_err(|_| BAD)?.trim();
    let (access, signature) = auth.rsplit_once(':').ok_or(BAD)?;
    if access.is_empty() {
        return Err(BAD);
    }
    let secret = keys.secret(access).ok_or(S3Error::InvalidAccessKeyId)?;
    let amz_date = req.headers.get("x-amz-date").map(<[u8]>::trim_ascii);
    let date = req.headers.get("date").map(<[u8]>::trim_ascii);
    let time = amz_date
        .or(date)
        .and_then(parse_date)
        .ok_or(S3Error::AccessDenied("AWS authentication requires a valid Date or x-amz-date header"))?;
    if (now - time).abs() > MAX_SKEW {
        return Err(S3Error::RequestTimeTooSkewed);
    }
    // S3 signs an empty date line when x-amz-date is sent; some clients sign Date anyway
    let mut dates = vec![if amz_date.is_some() { &b""[..] } else { date.unwrap_or_default() }];
    if let (Some(_), Some(d)) = (amz_date, date) {
        dates.push(d);
    }
    verify(req, &dates, secret, signature)?;
    streaming_unsupported(content)?;
    Ok(Verified { access_key: Some(access.to_owned()), content, chain: None })
}

/// A date as SigV2 clients send it: an HTTP date in `GMT`, or with `+0000` (S3's own
/// examples) or `UTC` (rclone: Go's RFC1123 of a UTC time), or `YYYYMMDD'T'HHMMSS'Z'`.
fn parse_date(d: &[u8]) -> Option<i64> {
    let gmt = [&b" +0000"[..], b" UTC"].iter().find_map(|z| d.strip_suffix(*z)).map(|s| [s, b" GMT"].concat());
    parse_http_date(gmt.as_deref().unwrap_or(d)).or_else(|| parse_amz_date(d))
}

/// A presigned URL: `AWSAccessKeyId`, `Expires` (Unix seconds) and `Signature` in the query.
pub fn presigned_auth(req: &Request, keys: &Keys, now: i64, content: ContentSha256) -> Result<Verified, S3Error> {
    const MISSING: S3Error = S3Error::AccessDenied(
        "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
    );
    let (mut access, mut expires, mut signature) = (None, None, None);
    for (name, value) in pairs(req.query) {
        // `+` stays `+` here: a base64 signature has no spaces
        let value = || percent_decode(value.unwrap_or_default(), false).and_then(|v| String::from_utf8(v).ok());
        match name {
            b"AWSAccessKeyId" => access = value(),
            b"Expires" => expires = value(),
            b"Signature" => signature = value(),
            _ => {}
        }
    }
    let (Some(access), Some(expires), Some(signature)) = (access, expires, signature) else { return Err(MISSING) };
    let until: i64 = expires.parse().map_err(|_| S3Error::AccessDenied("Expires must be a number of seconds"))?;
    let secret = keys.secret(&access).ok_or(S3Error::InvalidAccessKeyId)?;
    if now > until {
        return Err(S3Error::AccessDenied("Request has expired"));
    }
    verify(req, &[expires.as_bytes()], secret, &signature)?;
    streaming_unsupported(content)?;
    Ok(Verified { access_key: Some(access), content, chain: None })
}

/// Chunk signatures chain from a SigV4 signature: a SigV2 request cannot carry them.
fn streaming_unsupported(content: ContentSha256) -> Result<(), S3Error> {
    match content {
        ContentSha256::Streaming { signed: true, .. } => {
            Err(S3Error::InvalidRequest("signed aws-chunked bodies need a Signature Version 4 request"))
        }
        _ => Ok(()),
    }
}

/// Compares `signature` (base64) with the HMAC-SHA1 of each string to sign `dates` allow,
/// the resource's path taken as sent and, when that differs, as S3 encodes it.
fn verify(req: &Request, dates: &[&[u8]], secret: &str, signature: &str) -> Result<(), S3Error> {
    let claimed = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| S3Error::SignatureDoesNotMatch)?;
    let mut paths = vec![req.path.to_vec()];
    let decoded = percent_decode(req.path, false).ok_or(S3Error::InvalidURI)?;
    let encoded = encode_path(&decoded);
    if encoded != req.path {
        paths.push(encoded);
    }
    // a bucket's own resource is `/bucket/` (botocore signs it so); `/bucket` as sent too
    if req.path.len() > 1 && !req.path[1..].contains(&b'/') {
        paths.insert(0, [req.path, b"/"].concat());
    }
    // `?uploads=` is signed `?uploads` by most clients, as sent by a few
    let empty_with_eq =
        pairs(req.query).any(|(n, v)| v == Some(b"") && SUB_RESOURCES.iter().any(|s| s.as_bytes() == n));
    let eqs: &[bool] = if empty_with_eq { &[false, true] } else { &[false] };
    for date in dates {
        for path in &paths {
            for &keep_eq in eqs {
                let sts = string_to_sign(req, date, path, keep_eq);
                let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
                mac.update(&sts);
                if mac.verify_slice(&claimed).is_ok() {
                    return Ok(());
                }
            }
        }
    }
    Err(S3Error::SignatureDoesNotMatch)
}

/// The string to sign with `date` on its date line and `path` as the resource's path.
fn string_to_sign(req: &Request, date: &[u8], path: &[u8], keep_eq: bool) -> Vec<u8> {
    let mut s = Vec::with_capacity(256);
    s.extend_from_slice(req.method.as_bytes());
    s.push(b'\n');
    for name in ["content-md5", "content-type"] {
        s.extend_from_slice(req.headers.get(name).map(<[u8]>::trim_ascii).unwrap_or_default());
        s.push(b'\n');
    }
    s.extend_from_slice(date);
    s.push(b'\n');
    amz_headers(&req.headers, &mut s);
    s.extend_from_slice(path);
    resource_query(req.query, &mut s, keep_eq);
    s
}

/// `name:value\n` for each `x-amz-*` header, sorted by lower-cased name.
fn amz_headers(headers: &Headers, out: &mut Vec<u8>) {
    let mut names: Vec<String> =
        headers.iter().map(|(n, _)| n.to_ascii_lowercase()).filter(|n| n.starts_with("x-amz-")).collect();
    names.sort();
    names.dedup();
    for name in names {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, value) in headers.get_all(&name).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(value.trim_ascii());
        }
        out.push(b'\n');
    }
}

/// `?a&b=v…`: the query's sub-resources, sorted by name (stably), values decoded. One
/// sent with no value is signed as its name alone (`?uploads`, as S3 and rclone sign
/// `?uploads=`) or, with `keep_eq`, with the `=` it was sent with.
fn resource_query(query: &[u8], out: &mut Vec<u8>, keep_eq: bool) {
    let decode = |b: &[u8]| percent_decode(b, false).unwrap_or_else(|| b.to_vec());
    // by name as the request is read (decoded): `upload%49d` left out of the string to sign
    // was still taken for `uploadId`, so a signed URL could be made to do another thing
    let mut subs: Vec<(Vec<u8>, Option<Vec<u8>>)> = pairs(query)
        .map(|(n, v)| (decode(n), v))
        .filter(|(n, _)| SUB_RESOURCES.iter().any(|s| s.as_bytes() == n.as_slice()))
        .map(|(n, v)| (n, v.map(decode)))
        .collect();
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, value)) in subs.iter().enumerate() {
        out.push(if i == 0 { b'?' } else { b'&' });
        out.extend_from_slice(name);
        match value {
            Some(v) if !v.is_empty() || keep_eq => {
                out.push(b'=');
                out.extend_from_slice(v);
            }
            _ => {}
        }
    }
}

/// The raw query's `name[=value]` pairs (value None without `=`).
fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], Some(&p[i + 1..])),
        None => (p, None),
    })
}

/// A path as S3 encodes it: unreserved bytes and `/` as they are, the rest `%XX`.
fn encode_path(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Requests and URLs botocore 1.44.8 signed with SigV2 at 2024-05-01T12:00:00Z, key
    //! `mkvtestkey`, secret `mkv/test+secret` (Config(signature_version='s3') for requests,
    //! the default `generate_presigned_url` for URLs), by `sigv2_capture.py` beside this file.
    use super::super::sigv4::{authenticate, KeyCache};
    use super::*;

    const SIGNED_AT: i64 = 1714564800;
    /// (method, target, headers but Date and Authorization, signature)
    type Captured = (&'static str, &'static str, &'static [(&'static str, &'static str)], &'static str);
    const DATE: (&str, &str) = ("Date", "Wed, 01 May 2024 12:00:00 GMT");

    fn keys() -> Keys {
        Keys::parse("mkvtestkey mkv/test+secret\nother other-secret\n").unwrap()
    }

    fn auth(method: &str, target: &str, headers: &[(&str, &str)], now: i64) -> Result<Verified, S3Error> {
        let h: Vec<httparse::Header> =
            headers.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let req = Request { method, path: path.as_bytes(), query: query.as_bytes(), headers: Headers(&h) };
        authenticate(&req, Some(&keys()), &mut KeyCache::default(), now)
    }

    fn signed(signature: &str) -> (&'static str, String) {
        ("Authorization", format!("AWS mkvtestkey:{signature}"))
    }

    /// Each captured request, as botocore sent it, is accepted.
    #[test]
    fn botocore_header_signatures() {
        let wire: &[Captured] = &[
            (
                "GET",
                "/b12/dir/a%20b%2Bc%21~%2A%28%29%27%C3%A9.txt",
                &[("x-amz-checksum-mode", "ENABLED")],
                "BZ9ukgkRPrrZpok6xhNMuubcSQc=",
            ),
            (
                "PUT",
                "/b12/k",
                &[
                    ("Content-Type", "text/plain"),
                    ("Content-MD5", "XUFAKrxLKna5cZ2REBfFkg=="),
                    ("x-amz-meta-color", "blue"),
                    ("x-amz-meta-Two", "x  y"),
                    ("Expect", "100-continue"),
                    ("Content-Length", "5"),
                ],
                "FoI0QutE4lvHSawrSAx8Zm9LO0s=",
            ),
            ("GET", "/b12?prefix=a%20b%2F&delimiter=%2F&encoding-type=url", &[], "mRhq5WRYq223PdTIKNT3NbrAkiU="),
            ("POST", "/b12/big?uploads", &[("Content-Length", "0")], "4hz+sVB1x1ciBppDTHx/Ul+1Wp8="),
            ("GET", "/b12/big?uploadId=u-1", &[], "KlsEZwz32is64VNI9dnAQGOrFrY="),
            (
                "GET",
                "/b12/k?response-content-type=text%2Fx%20y&response-content-disposition=attachment",
                &[("x-amz-checksum-mode", "ENABLED")],
                "cNdECoU+T51tF2LzY/0xmiBF7lc=",
            ),
        ];
        for (method, target, headers, signature) in wire {
            let auth_header = signed(signature);
            let mut all: Vec<(&str, &str)> = headers.to_vec();
            all.push(DATE);
            all.push((auth_header.0, &auth_header.1));
            let v = auth(method, target, &all, SIGNED_AT + 60).unwrap_or_else(|e| panic!("{method} {target}: {e:?}"));
            assert_eq!(v.access_key.as_deref(), Some("mkvtestkey"));
            // one byte changed anywhere signed: refused
            let other = target.replacen("b12", "b13", 1);
            assert_eq!(auth(method, &other, &all, SIGNED_AT).unwrap_err(), S3Error::SignatureDoesNotMatch, "{target}");
        }
    }

    /// The example of S3's SigV2 documentation ("Object GET").
    #[test]
    fn s3_documentation_example() {
        let mut k = Keys::default();
        k.insert("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let h = [
            httparse::Header { name: "Host", value: b"awsexamplebucket1.us-west-1.s3.amazonaws.com" },
            httparse::Header { name: "Date", value: b"Tue, 27 Mar 2007 19:36:42 +0000" },
            httparse::Header { name: "Authorization", value: b"AWS AKIAIOSFODNN7EXAMPLE:qgk2+6Sv9/oM7G3qLEjTH1a1l1g=" },
        ];
        let req =
            Request { method: "GET", path: b"/awsexamplebucket1/photos/puppy.jpg", query: b"", headers: Headers(&h) };
        let v = authenticate(&req, Some(&k), &mut KeyCache::default(), 1175024202).unwrap();
        assert_eq!(v.access_key.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
    }

    #[test]
    fn header_refusals() {
        let get = |headers: &[(&str, &str)], now| auth("GET", "/b12/big?uploadId=u-1", headers, now);
        let good = signed("KlsEZwz32is64VNI9dnAQGOrFrY=");
        let good = (good.0, good.1.as_str());
        assert!(get(&[DATE, good], SIGNED_AT).is_ok());
        assert_eq!(get(&[DATE, good], SIGNED_AT + 16 * 60).unwrap_err(), S3Error::RequestTimeTooSkewed);
        assert_eq!(get(&[DATE, good], SIGNED_AT - 16 * 60).unwrap_err(), S3Error::RequestTimeTooSkewed);
        assert!(matches!(get(&[good], SIGNED_AT).unwrap_err(), S3Error::AccessDenied(_)), "no date");
        let unknown = ("Authorization", "AWS nobody:KlsEZwz32is64VNI9dnAQGOrFrY=");
        assert_eq!(get(&[DATE, unknown], SIGNED_AT).unwrap_err(), S3Error::InvalidAccessKeyId);
        let other = ("Authorization", "AWS other:KlsEZwz32is64VNI9dnAQGOrFrY=");
        assert_eq!(get(&[DATE, other], SIGNED_AT).unwrap_err(), S3Error::SignatureDoesNotMatch);
        let garbage = ("Authorization", "AWS mkvtestkey:not base64!");
        assert_eq!(get(&[DATE, garbage], SIGNED_AT).unwrap_err(), S3Error::SignatureDoesNotMatch);
        assert_eq!(
            get(&[DATE, ("Authorization", "AWS nocolon")], SIGNED_AT).unwrap_err().code(),
            "AuthorizationHeaderMalformed"
        );
        // a header signed along changes the signature: x-amz-* are signed, others not
        assert_eq!(get(&[DATE, good, ("x-amz-meta-x", "1")], SIGNED_AT).unwrap_err(), S3Error::SignatureDoesNotMatch);
        assert!(get(&[DATE, good, ("User-Agent", "anything")], SIGNED_AT).is_ok());
    }

    /// With x-amz-date, S3 signs an empty date line (and the skew is x-amz-date's).
    #[test]
    fn x_amz_date_empties_the_date_line() {
        let secret = "mkv/test+secret";
        let sts = "GET\n\n\n\nx-amz-date:Wed, 01 May 2024 12:00:00 GMT\n/b12/k";
        let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(sts.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let auth_header = format!("AWS mkvtestkey:{sig}");
        let headers =
            [("x-amz-date", DATE.1), ("Date", "Thu, 01 Jan 2009 00:00:00 GMT"), ("Authorization", &auth_header)];
        assert!(auth("GET", "/b12/k", &headers, SIGNED_AT).is_ok());
    }

    #[test]
    fn botocore_presigned_urls() {
        let urls = [
            ("GET", "/b12/a%20b%2Bc/%C3%A9?AWSAccessKeyId=mkvtestkey&Signature=l62rPlB%2FKpdOJUlBlRTP4hxfHBI%3D&Expires=1714565400"),
            (
                "GET",
                "/b12/k?response-content-type=text%2Fx%20y&AWSAccessKeyId=mkvtestkey&Signature=5BYJ8V6YCmw0PbfSAuGD5PjFgpI%3D&Expires=1714565400",
            ),
            ("PUT", "/b12/up?AWSAccessKeyId=mkvtestkey&Signature=RNty5UbWWNKzR5GneXaSocQ%2Bbrs%3D&Expires=1714565400"),
        ];
        for (method, url) in urls {
            let v = auth(method, url, &[], SIGNED_AT + 599).unwrap_or_else(|e| panic!("{url}: {e:?}"));
            assert_eq!(v.access_key.as_deref(), Some("mkvtestkey"));
            assert_eq!(
                auth(method, url, &[], SIGNED_AT + 601).unwrap_err(),
                S3Error::AccessDenied("Request has expired")
            );
            let other = if method == "GET" { "HEAD" } else { "GET" };
            assert_eq!(auth(other, url, &[], SIGNED_AT).unwrap_err(), S3Error::SignatureDoesNotMatch, "{url}");
            let longer = url.replace("Expires=1714565400", "Expires=1714569000");
            assert_eq!(auth(method, &longer, &[], SIGNED_AT).unwrap_err(), S3Error::SignatureDoesNotMatch);
        }
        let unknown = "/b12/up?AWSAccessKeyId=nobody&Signature=RNty5UbWWNKzR5GneXaSocQ%2Bbrs%3D&Expires=1714565400";
        assert_eq!(auth("PUT", unknown, &[], SIGNED_AT).unwrap_err(), S3Error::InvalidAccessKeyId);
        let missing = "/b12/up?AWSAccessKeyId=mkvtestkey&Expires=1714565400";
        assert!(matches!(auth("PUT", missing, &[], SIGNED_AT).unwrap_err(), S3Error::AccessDenied(_)));
    }

    #[test]
    fn dates() {
        for d in ["Wed, 01 May 2024 12:00:00 GMT", "Wed, 01 May 2024 12:00:00 +0000", "Wed, 01 May 2024 12:00:00 UTC"] {
            assert_eq!(parse_date(d.as_bytes()), Some(SIGNED_AT), "{d}");
        }
        assert_eq!(parse_date(b"20240501T120000Z"), Some(SIGNED_AT));
        assert_eq!(parse_date(b"Wed, 01 May 2024 12:00:00 CET"), None);
    }

    #[test]
    fn the_string_to_sign() {
        let h = [
            httparse::Header { name: "X-Amz-Meta-B", value: b" 2 " },
            httparse::Header { name: "x-amz-meta-a", value: b"1" },
            httparse::Header { name: "X-AMZ-META-B", value: b"3" },
            httparse::Header { name: "Content-Type", value: b"text/plain" },
        ];
        let req = Request {
            method: "PUT",
            path: b"/b/k",
            query: b"uploadId=u%2D1&partNumber=2&x=y&acl",
            headers: Headers(&h),
        };
        let sts = string_to_sign(&req, b"DATE", req.path, false);
        assert_eq!(
            String::from_utf8(sts).unwrap(),
            "PUT\n\ntext/plain\nDATE\nx-amz-meta-a:1\nx-amz-meta-b:2,3\n/b/k?acl&partNumber=2&uploadId=u-1"
        );
        let uploads = Request { method: "POST", path: b"/b/k", query: b"uploads=", headers: Headers(&[]) };
        assert!(string_to_sign(&uploads, b"D", uploads.path, false).ends_with(b"\n/b/k?uploads"));
        assert!(string_to_sign(&uploads, b"D", uploads.path, true).ends_with(b"\n/b/k?uploads="));
        assert_eq!(encode_path("/a b/é+~".as_bytes()), b"/a%20b/%C3%A9%2B~");
    }
}
