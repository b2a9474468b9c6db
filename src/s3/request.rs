//! Which requests are S3 requests, and what each one asks for: a side-effect-free parse of
//! method, path, query and headers into an [`Op`], before any index or volume is touched.
//!
//! Path style only: `/BUCKET/KEY`, whose native key is `/BUCKET/KEY` (one namespace with
//! the native API). Keys are bytes, percent-decoded from the path: an S3 write must name
//! a UTF-8 key, but a key the native API made with other bytes is read and deleted alike.
//! What mkv does not implement parses to [`Op::NotImplemented`], never to a guess.

use base64::Engine;

use super::error::S3Error;
use super::meta::{copy_source, ByteRange, Conditions, IfRange, Metadata, MetadataDirective};

/// S3's own limit on a key's length, in bytes.
pub const MAX_KEY: usize = 1024;
/// The most keys (uploads, parts) one listing page holds, and the default.
pub const MAX_LIST: usize = 1000;
/// Part numbers run from 1 to this.
pub const MAX_PART: u32 = 10000;

/// The request's headers, as httparse gave them; lookups are case-insensitive.
#[derive(Clone, Copy)]
pub struct Headers<'a>(pub &'a [httparse::Header<'a>]);

impl<'a> Headers<'a> {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.0.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.0.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.0.iter().map(|h| (h.name, h.value))
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Query parameter names that make a request an S3 request (sub-resources and the
/// parameters of S3 operations); none of them is a parameter of the native API.
#[rustfmt::skip]
const S3_PARAMS: &[&str] = &[
    "list-type", "uploads", "uploadId", "partNumber", "delete", "location", "versioning", "versions", "versionId",
    "prefix", "delimiter", "marker", "max-keys", "continuation-token", "start-after", "encoding-type", "fetch-owner",
    "max-uploads", "key-marker", "upload-id-marker", "max-parts", "part-number-marker", "acl", "tagging", "policy",
    "policyStatus", "lifecycle", "cors", "website", "logging", "notification", "replication", "encryption",
    "object-lock", "legal-hold", "retention", "requestPayment", "accelerate", "analytics", "inventory", "metrics",
    "intelligent-tiering", "ownershipControls", "publicAccessBlock", "restore", "select", "select-type", "torrent",
    "attributes", "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "x-id", "AWSAccessKeyId", "renameObject",
];

/// Sub-resources mkv does not implement, for any method (versioning and location are
/// read-only answers handled by name).
#[rustfmt::skip]
const UNSUPPORTED: &[&str] = &[
    "acl", "tagging", "policy", "policyStatus", "lifecycle", "cors", "website", "logging", "notification",
    "replication", "encryption", "object-lock", "legal-hold", "retention", "requestPayment", "accelerate",
    "analytics", "inventory", "metrics", "intelligent-tiering", "ownershipControls", "publicAccessBlock", "restore",
    "select", "torrent", "attributes", "versions", "renameObject",
];

/// Whether a request is an S3 request (S3.md's rule); every other request stays native.
/// `path` and `query` are raw (still percent-encoded), `query` without its `?`.
pub fn is_s3(method: &str, path: &[u8], query: &[u8], headers: &Headers) -> bool {
    for (name, value) in headers.iter() {
        if name.eq_ignore_ascii_case("authorization")
            && (value.starts_with(b"AWS4-HMAC-SHA256 ") || value.starts_with(b"AWS "))
        {
            return true;
        }
        if crate::http::amz_header(name) {
            return true;
        }
        if name.eq_ignore_ascii_case("content-encoding")
            && value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"aws-chunked"))
        {
            return true;
        }
    }
    for (name, _) in raw_pairs(query) {
        if (name.len() > 6 && name[..6].eq_ignore_ascii_case(b"x-amz-"))
            || S3_PARAMS.iter().any(|p| p.as_bytes() == name)
        {
            return true;
        }
    }
    // a browser-form upload (PostObject: its policy and signature travel in the form), which
    // is S3's to refuse as not implemented; the native API has no POST
    if method == "POST"
        && headers.get("content-type").is_some_and(|v| {
            v.trim_ascii_start().get(..19).is_some_and(|t| t.eq_ignore_ascii_case(b"multipart/form-data"))
        })
    {
        return true;
    }
    // the folder markers pyarrow and rclone write anonymously; natively such a PUT is refused
    method == "PUT" && path.len() > 1 && path.ends_with(b"/") && empty_body(headers)
}

/// Whether the framing headers announce no body at all.
fn empty_body(headers: &Headers) -> bool {
    !headers.has("transfer-encoding") && headers.get("content-length").is_none_or(|v| v.trim_ascii() == b"0")
}

fn raw_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &[][..]),
    })
}

/// Percent-decodes `src`; in a query (`plus_is_space`) `+` is a space, as S3 reads it.
pub fn percent_decode(src: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        match src[i] {
            b'%' => {
                let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
                out.push((hex(src.get(i + 1))? * 16 + hex(src.get(i + 2))?) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The query, decoded: names and values as bytes, in the order sent.
#[derive(Debug, Default)]
pub struct Query(Vec<(Vec<u8>, Vec<u8>)>);

impl Query {
    pub fn parse(raw: &[u8]) -> Result<Query, S3Error> {
        let decode = |s| percent_decode(s, true).ok_or(S3Error::InvalidURI);
        raw_pairs(raw).map(|(n, v)| Ok((decode(n)?, decode(v)?))).collect::<Result<_, _>>().map(Query)
    }

    /// The first value of `name` (empty for `?name` and `?name=`).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn text(&self, name: &str) -> Result<Option<&str>, S3Error> {
        self.get(name)
            .map(|v| std::str::from_utf8(v).map_err(|_| S3Error::InvalidArgument("parameter is not UTF-8")))
            .transpose()
    }
}

/// An object: its bucket and its key within the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bucket: String,
    pub key: Vec<u8>,
}

impl Object {
    /// The key in mkv's one namespace: `/BUCKET/KEY`.
    pub fn native_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.bucket.len() + self.key.len() + 2);
        k.push(b'/');
        k.extend_from_slice(self.bucket.as_bytes());
        k.push(b'/');
        k.extend_from_slice(&self.key);
        k
    }
}

/// The parameters every listing shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub prefix: Vec<u8>,
    /// `None` also for an empty `delimiter=` (s3cmd and the MinIO SDK send one).
    pub delimiter: Option<Vec<u8>>,
    /// At most [`MAX_LIST`]; 0 is allowed and lists nothing.
    pub max_keys: usize,
    /// `encoding-type=url`: keys, prefixes and markers in the answer are percent-encoded.
    pub url_encoding: bool,
}

/// What a GET or HEAD of an object asks for besides the object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Read {
    pub range: Option<ByteRange>,
    pub if_range: Option<IfRange>,
    pub conditions: Conditions,
    /// `response-content-type=…` and its kin: (header name, value) to answer with instead.
    pub overrides: Vec<(&'static str, Vec<u8>)>,
}

impl Read {
    /// The range to serve of the object (`etag` unquoted, `modified` in Unix seconds), as
    /// its `If-Range` allows: none, the whole object, when that names another.
    pub fn range_of(&self, etag: &str, modified: i64) -> Option<ByteRange> {
        self.range.filter(|_| self.if_range.as_ref().is_none_or(|v| v.holds(etag, modified)))
    }
}

/// One S3 operation, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `prefix`, at most `max` (`max-buckets`), after the `continuation-token` (the last
    /// name of the page before).
    ListBuckets {
        prefix: String,
        max: Option<usize>,
        after: Option<String>,
    },
    CreateBucket {
        bucket: String,
    },
    HeadBucket {
        bucket: String,
    },
    DeleteBucket {
        bucket: String,
    },
    GetBucketLocation {
        bucket: String,
    },
    /// Always answered "never enabled": mkv keeps no versions.
    GetBucketVersioning {
        bucket: String,
    },
    ListObjectsV1 {
        bucket: String,
        list: ListParams,
        marker: Vec<u8>,
    },
    /// `continuation` is the key the token names (see [`continuation_token`]); S3 ignores
    /// `start_after` when a token is given.
    ListObjectsV2 {
        bucket: String,
        list: ListParams,
        continuation: Option<Vec<u8>>,
        start_after: Vec<u8>,
        fetch_owner: bool,
    },
    ListMultipartUploads {
        bucket: String,
        list: ListParams,
        key_marker: Vec<u8>,
        upload_id_marker: String,
    },
    /// The body (a `<Delete>` document) is parsed by [`super::xml::parse_delete`].
    DeleteObjects {
        bucket: String,
    },
    PutObject {
        obj: Object,
        meta: Metadata,
        conditions: Conditions,
    },
    /// `meta` is `Some` for `x-amz-metadata-directive: REPLACE`, `None` to copy the source's.
    /// `conditions` are the source's (`x-amz-copy-source-if-*`), `write_if` the destination's.
    CopyObject {
        obj: Object,
        source: Object,
        meta: Option<Metadata>,
        conditions: Conditions,
        write_if: Conditions,
    },
    GetObject {
        obj: Object,
        read: Read,
    },
    HeadObject {
        obj: Object,
        read: Read,
    },
    DeleteObject {
        obj: Object,
        write_if: Conditions,
    },
    CreateMultipartUpload {
        obj: Object,
        meta: Metadata,
    },
    UploadPart {
        obj: Object,
        upload_id: String,
        part: u32,
    },
    /// `range`: `x-amz-copy-source-range`, first and last byte, inclusive.
    UploadPartCopy {
        obj: Object,
        upload_id: String,
        part: u32,
        source: Object,
        range: Option<(u64, u64)>,
        conditions: Conditions,
    },
    /// The body (a `<CompleteMultipartUpload>` document) is parsed by [`super::xml::parse_complete`].
    CompleteMultipartUpload {
        obj: Object,
        upload_id: String,
        write_if: Conditions,
    },
    AbortMultipartUpload {
        obj: Object,
        upload_id: String,
    },
    ListParts {
        obj: Object,
        upload_id: String,
        max_parts: usize,
        part_number_marker: u32,
    },
    /// Answered `501 NotImplemented`, naming what.
    NotImplemented(&'static str),
}

/// Parses an S3 request (one [`is_s3`] said yes to). `path` and `query` are raw.
pub fn parse(method: &str, path: &[u8], query: &[u8], headers: &Headers) -> Result<Op, S3Error> {
    let q = Query::parse(query)?;
    let Some(rest) = path.strip_prefix(b"/") else { return Err(S3Error::InvalidURI) };
    if rest.is_empty() {
        return match method {
            "GET" => {
                let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
                let max = match q.get("max-buckets") {
                    None => None,
                    Some(_) => match number(&q, "max-buckets", 0)? {
                        n @ 1..=10_000 => Some(n),
                        _ => return Err(S3Error::InvalidArgument("max-buckets must be between 1 and 10000")),
                    },
                };
                Ok(Op::ListBuckets {
                    prefix: q.get("prefix").map(text).unwrap_or_default(),
                    max,
                    after: q.get("continuation-token").map(text),
                })
            }
            _ => Err(S3Error::MethodNotAllowed),
        };
    }
    let (bucket, key) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let bucket = percent_decode(bucket, false).ok_or(S3Error::InvalidURI)?;
    let bucket = match String::from_utf8(bucket) {
        Ok(b) if reachable_bucket(&b) => b,
        _ => return Err(S3Error::InvalidBucketName),
    };
    let key = percent_decode(key, false).ok_or(S3Error::InvalidURI)?;
    if key.len() > MAX_KEY {
        return Err(S3Error::KeyTooLong);
    }
    if let Some(sub) = UNSUPPORTED.iter().find(|s| q.has(s)) {
        return Ok(Op::NotImplemented(sub));
    }
    if key.is_empty() {
        bucket_op(method, bucket, &q, headers)
    } else {
        object_op(method, Object { bucket, key }, &q, headers)
    }
}

fn bucket_op(method: &str, bucket: String, q: &Query, headers: &Headers) -> Result<Op, S3Error> {
    Ok(match method {
        "GET" if q.has("location") => Op::GetBucketLocation { bucket },
        "GET" if q.has("versioning") => Op::GetBucketVersioning { bucket },
        "GET" if q.has("uploads") => Op::ListMultipartUploads {
            list: list_params(q, "max-uploads")?,
            key_marker: q.get("key-marker").unwrap_or_default().to_vec(),
            upload_id_marker: q.text("upload-id-marker")?.unwrap_or_default().to_owned(),
            bucket,
        },
        "GET" => match q.get("list-type") {
            Some(b"2") => Op::ListObjectsV2 {
                list: list_params(q, "max-keys")?,
                continuation: q.text("continuation-token")?.map(decode_token).transpose()?,
                start_after: q.get("start-after").unwrap_or_default().to_vec(),
                fetch_owner: q.get("fetch-owner") == Some(b"true"),
                bucket,
            },
            Some(_) => return Err(S3Error::InvalidArgument("list-type must be 2")),
            None => Op::ListObjectsV1 {
                list: list_params(q, "max-keys")?,
                marker: q.get("marker").unwrap_or_default().to_vec(),
                bucket,
            },
        },
        "HEAD" => Op::HeadBucket { bucket },
        "PUT" if q.has("versioning") => Op::NotImplemented("PutBucketVersioning: mkv keeps no versions"),
        "PUT" if headers.get("x-amz-bucket-object-lock-enabled").is_some_and(|v| v.eq_ignore_ascii_case(b"true")) => {
            Op::NotImplemented("object lock")
        }
        "PUT" if !valid_bucket(&bucket) => return Err(S3Error::InvalidBucketName),
        "PUT" => Op::CreateBucket { bucket },
        // a sub-resource's DELETE (DeleteBucketVersioning is no S3 call) must not take the bucket
        "DELETE" if ["versioning", "location", "uploads", "delete"].iter().any(|s| q.has(s)) => {
            return Err(S3Error::MethodNotAllowed)
        }
        "DELETE" => Op::DeleteBucket { bucket },
        "POST" if q.has("delete") => {
            super::checksum::check_algorithm_names(headers)?;
            Op::DeleteObjects { bucket }
        }
        "POST" => Op::NotImplemented("POST object (browser form upload)"),
        _ => return Err(S3Error::MethodNotAllowed),
    })
}

fn object_op(method: &str, obj: Object, q: &Query, headers: &Headers) -> Result<Op, S3Error> {
    // mkv keeps no versions: "null" is the one version every object has in an unversioned bucket
    if q.get("versionId").is_some_and(|v| v != b"null") {
        return Err(S3Error::NoSuchVersion);
    }
    let upload_id = q.text("uploadId")?.map(valid_upload_id).transpose()?;
    Ok(match method {
        "GET" if upload_id.is_some() => Op::ListParts {
            obj,
            upload_id: upload_id.unwrap_or_default(),
            max_parts: number(q, "max-parts", MAX_LIST)?.min(MAX_LIST),
            part_number_marker: number(q, "part-number-marker", 0)?.min(MAX_PART as usize) as u32,
        },
        "GET" | "HEAD" if q.has("partNumber") => Op::NotImplemented("GetObject of one part (partNumber)"),
        // no object is stored encrypted (SSE-C writes are refused): S3's answer to a key
        // given for one that is not, rather than the bytes as if it were
        "GET" | "HEAD" if headers.has("x-amz-server-side-encryption-customer-algorithm") => {
            return Err(S3Error::InvalidRequest("The encryption parameters are not applicable to this object."))
        }
        "GET" | "HEAD" => {
            let read = Read {
                range: headers.get("range").and_then(ByteRange::parse),
                if_range: headers.get("if-range").map(IfRange::parse),
                conditions: Conditions::from_headers(headers, ""),
                overrides: overrides(q),
            };
            if method == "GET" {
                Op::GetObject { obj, read }
            } else {
                Op::HeadObject { obj, read }
            }
        }
        "PUT" => {
            utf8_key(&obj)?;
            refuse_unsupported(headers)?;
            super::checksum::check_algorithm_names(headers)?;
            let source = headers.get("x-amz-copy-source").map(copy_source).transpose()?;
            if upload_id.is_some() || q.has("partNumber") {
                let (Some(upload_id), Some(part)) = (upload_id, q.get("partNumber")) else {
                    return Err(S3Error::InvalidArgument("partNumber and uploadId go together"));
                };
                let part = part_number(part)?;
                match source {
                    None => Op::UploadPart { obj, upload_id, part },
                    Some(source) => Op::UploadPartCopy {
                        range: headers.get("x-amz-copy-source-range").map(copy_range).transpose()?,
                        conditions: Conditions::from_headers(headers, "x-amz-copy-source-"),
                        obj,
                        upload_id,
                        part,
                        source,
                    },
                }
            } else if let Some(source) = source {
                let meta = match MetadataDirective::from_headers(headers)? {
                    // S3 takes a copy onto itself that names a storage class (only STANDARD
                    // passes `refuse_unsupported`), as `aws s3 cp --storage-class` sends
                    MetadataDirective::Copy if source == obj && !headers.has("x-amz-storage-class") => {
                        return Err(S3Error::InvalidRequest(
                            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata.",
                        ))
                    }
                    MetadataDirective::Copy => None,
                    MetadataDirective::Replace => Some(Metadata::from_headers(headers)?),
                };
                Op::CopyObject {
                    obj,
                    source,
                    meta,
                    conditions: Conditions::from_headers(headers, "x-amz-copy-source-"),
                    write_if: Conditions::for_write(headers),
                }
            } else {
                Op::PutObject {
                    meta: Metadata::from_headers(headers)?,
                    conditions: Conditions::for_write(headers),
                    obj,
                }
            }
        }
        "DELETE" => match upload_id {
            Some(upload_id) => Op::AbortMultipartUpload { obj, upload_id },
            None => Op::DeleteObject { obj, write_if: Conditions::for_delete(headers) },
        },
        "POST" if q.has("uploads") => {
            utf8_key(&obj)?;
            refuse_unsupported(headers)?;
            super::checksum::check_algorithm_names(headers)?;
            Op::CreateMultipartUpload { meta: Metadata::from_headers(headers)?, obj }
        }
        "POST" => match upload_id {
            Some(upload_id) => {
                super::checksum::check_algorithm_names(headers)?;
                Op::CompleteMultipartUpload { obj, upload_id, write_if: Conditions::for_write(headers) }
            }
            None => Op::NotImplemented("POST to an object without ?uploads or ?uploadId"),
        },
        _ => return Err(S3Error::MethodNotAllowed),
    })
}

/// A key an S3 write makes is UTF-8, as S3's keys are: listings carry keys as XML text,
/// and one other byte made a bucket's listing unreadable to every client (and `aws s3 rm`
/// could not name the key to delete it). A key the native API made with such bytes is still
/// read, copied from and deleted through S3.
fn utf8_key(obj: &Object) -> Result<(), S3Error> {
    match std::str::from_utf8(&obj.key) {
        Ok(_) => Ok(()),
        Err(_) => Err(S3Error::InvalidArgument("Object keys must be UTF-8")),
    }
}

/// Write headers whose promise mkv cannot keep: refused rather than silently dropped.
/// (`x-amz-acl` is not among them: S3.md has it accepted and ignored.)
fn refuse_unsupported(headers: &Headers) -> Result<(), S3Error> {
    for (name, value) in headers.iter() {
        let n = name.to_ascii_lowercase();
        let what = if n.starts_with("x-amz-server-side-encryption")
            || n.starts_with("x-amz-copy-source-server-side-encryption")
        {
            "server-side encryption"
        } else if n.starts_with("x-amz-object-lock-") {
            "object lock"
        } else if n == "x-amz-tagging" {
            "object tagging"
        } else if n.starts_with("x-amz-grant-") {
            "ACL grants"
        } else if n == "x-amz-website-redirect-location" {
            "website redirects"
        } else if n == "x-amz-write-offset-bytes" {
            // an append: taken as a PutObject, it would replace the object with its tail
            "appends (x-amz-write-offset-bytes)"
        } else if n == "x-amz-rename-source" {
            "RenameObject"
        } else if n == "x-amz-storage-class" && !STORAGE_CLASSES.contains(&value.trim_ascii()) {
            return Err(S3Error::InvalidStorageClass);
        } else if n == "x-amz-storage-class" && value.trim_ascii() != b"STANDARD" {
            // GLACIER and its kin promise another kind of keeping: mkv has one, STANDARD
            "storage classes other than STANDARD"
        } else {
            continue;
        };
        return Err(S3Error::NotImplemented(what));
    }
    Ok(())
}

/// The storage classes S3 knows (`x-amz-storage-class`); any other is `InvalidStorageClass`.
const STORAGE_CLASSES: [&[u8]; 12] = [
    b"STANDARD",
    b"REDUCED_REDUNDANCY",
    b"STANDARD_IA",
    b"ONEZONE_IA",
    b"INTELLIGENT_TIERING",
    b"GLACIER",
    b"DEEP_ARCHIVE",
    b"OUTPOSTS",
    b"GLACIER_IR",
    b"SNOW",
    b"EXPRESS_ONEZONE",
    b"FSX_OPENZFS",
];

fn list_params(q: &Query, max_name: &str) -> Result<ListParams, S3Error> {
    let url_encoding = match q.get("encoding-type") {
        None | Some(b"") => false,
        Some(v) if v.eq_ignore_ascii_case(b"url") => true,
        Some(_) => return Err(S3Error::InvalidArgument("Invalid Encoding Method specified in Request")),
    };
    Ok(ListParams {
        prefix: q.get("prefix").unwrap_or_default().to_vec(),
        delimiter: q.get("delimiter").filter(|d| !d.is_empty()).map(<[u8]>::to_vec),
        max_keys: number(q, max_name, MAX_LIST)?.min(MAX_LIST),
        url_encoding,
    })
}

/// A non-negative integer parameter; absent (or empty) is `default`.
fn number(q: &Query, name: &str, default: usize) -> Result<usize, S3Error> {
    match q.get(name) {
        None | Some(b"") => Ok(default),
        Some(v) if v.len() <= 12 && v.iter().all(u8::is_ascii_digit) => {
            Ok(v.iter().fold(0usize, |acc, &c| acc * 10 + (c - b'0') as usize))
        }
        Some(_) => Err(S3Error::InvalidArgument("a numeric parameter is not a non-negative integer")),
    }
}

fn part_number(v: &[u8]) -> Result<u32, S3Error> {
    const BAD: S3Error = S3Error::InvalidArgument("Part number must be an integer between 1 and 10000, inclusive");
    if v.is_empty() || v.len() > 5 || !v.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    let n = v.iter().fold(0u32, |acc, &c| acc * 10 + (c - b'0') as u32);
    if (1..=MAX_PART).contains(&n) {
        Ok(n)
    } else {
        Err(BAD)
    }
}

/// Upload ids are ours (the index's): at most 128 of `A-Za-z0-9-_.~`, so the handlers must
/// make them so; anything else cannot name an upload.
fn valid_upload_id(id: &str) -> Result<String, S3Error> {
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(S3Error::NoSuchUpload)
    }
}

/// `x-amz-copy-source-range: bytes=first-last` (both required, first ≤ last).
fn copy_range(v: &[u8]) -> Result<(u64, u64), S3Error> {
    const BAD: S3Error =
        S3Error::InvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last");
    match ByteRange::parse(v) {
        Some(ByteRange::From { first, last: Some(last) }) => Ok((first, last)),
        _ => Err(BAD),
    }
}

fn overrides(q: &Query) -> Vec<(&'static str, Vec<u8>)> {
    const NAMES: [(&str, &str); 6] = [
        ("response-content-type", "Content-Type"),
        ("response-content-language", "Content-Language"),
        ("response-expires", "Expires"),
        ("response-cache-control", "Cache-Control"),
        ("response-content-disposition", "Content-Disposition"),
        ("response-content-encoding", "Content-Encoding"),
    ];
    // a value that could split the answer's head is dropped, not echoed
    let safe = |v: &&[u8]| !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0);
    NAMES.iter().filter_map(|(param, header)| q.get(param).filter(safe).map(|v| (*header, v.to_vec()))).collect()
}

/// Whether `name` reaches a bucket: S3's legacy rules (up to 255 letters of either case,
/// digits, `.`, `-`, `_`), which clients still send, so that every native key whose first
/// segment is such a name is an object (one namespace: minikeyvalue's keys, and buckets of
/// two letters, are reached as they are). A bucket is made only under [`valid_bucket`]'s.
pub fn reachable_bucket(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        && name != "."
        && name != ".."
}

/// Whether CreateBucket may make a bucket named `name`: S3's naming rules of today (3–63
/// characters of `a-z0-9.-`, a letter or digit at each end, no `..`, not shaped like an IP
/// address, none of AWS's reserved prefixes/suffixes).
pub fn valid_bucket(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.iter().all(|&c| alnum(c) || c == b'.' || c == b'-')
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
        && !["xn--", "sthree-", "amzn-s3-demo-"].iter().any(|p| name.starts_with(p))
        && !["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"].iter().any(|s| name.ends_with(s))
}

/// The ListObjectsV2 continuation token that resumes at `key` (opaque to clients).
pub fn continuation_token(key: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// The key a token names. None is empty (keys are not), so an empty token is refused, as S3
/// does, rather than taken for "from the start".
fn decode_token(token: &str) -> Result<Vec<u8>, S3Error> {
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(S3Error::InvalidArgument("The continuation token provided is incorrect")),
    }
}

#[cfg(test)]
mod tests;
