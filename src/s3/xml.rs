//! S3's XML: every answer body mkv sends (listings, multipart, DeleteResult, errors) and
//! the two request bodies it reads (CompleteMultipartUpload, Delete), with quick-xml.
//!
//! Keys are bytes. With `encoding-type=url` a listing percent-encodes them and nothing
//! else needs saying. Without it, XML 1.0 cannot carry every key, and mkv writes what S3
//! writes: `<`, `>`, `&` escaped, CR as `&#xD;` (a parser would turn a raw CR into LF),
//! other C0 controls as character references such as `&#x1;` (legal in XML 1.1, which
//! strict XML 1.0 parsers refuse: such keys need `encoding-type=url`, which boto3, the AWS
//! CLI and rclone send). Bytes that are not UTF-8, which S3 keys never hold (an S3 write
//! refuses them; the native API may make such keys), are written as they are: the
//! document is then not UTF-8 and a strict parser refuses it; nothing is replaced, so no
//! key is ever silently mangled.

use quick_xml::{escape::partial_escape, events::Event, Reader};

use super::checksum::{Algorithm, Digest};
use super::error::S3Error;
use super::request::{ListParams, MAX_LIST, MAX_PART};
use crate::dates::iso8601_ms;

pub const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// The largest CompleteMultipartUpload or Delete body read (10000 parts, 1000 keys of
/// up to 1024 bytes each, escaped, fit).
pub const MAX_XML_BODY: usize = 8 << 20;
/// Elements nested deeper than this are not a document S3 defines.
const MAX_DEPTH: usize = 8;
/// The one owner mkv knows.
const OWNER: &str = "<ID>mkv</ID><DisplayName>mkv</DisplayName>";

/// An answer under construction.
struct Doc(Vec<u8>);

impl Doc {
    fn new(root: &str) -> Doc {
        let mut d = Doc(Vec::with_capacity(1024));
        d.raw(&format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{XMLNS}\">"));
        d
    }

    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn open(&mut self, name: &str) {
        self.raw(&format!("<{name}>"));
    }

    fn close(&mut self, name: &str) {
        self.raw(&format!("</{name}>"));
    }

    /// `<name>text</name>`, the text escaped as the module doc says.
    fn text(&mut self, name: &str, text: &[u8]) {
        self.open(name);
        escape(&mut self.0, text);
        self.close(name);
    }

    /// A key-like value: percent-encoded under `encoding-type=url`.
    fn key(&mut self, name: &str, key: &[u8], url: bool) {
        if url {
            self.text(name, url_encode(key).as_bytes());
        } else {
            self.text(name, key);
        }
    }

    fn etag(&mut self, etag: &str) {
        self.text("ETag", format!("\"{etag}\"").as_bytes());
    }

    fn date(&mut self, name: &str, ms: i64) {
        self.text(name, iso8601_ms(ms).as_bytes());
    }

    fn num(&mut self, name: &str, n: impl std::fmt::Display) {
        self.text(name, n.to_string().as_bytes());
    }

    fn bool(&mut self, name: &str, b: bool) {
        self.text(name, if b { b"true" } else { b"false" });
    }

    fn end(mut self, root: &str) -> Vec<u8> {
        self.close(root);
        self.0
    }
}

/// Escapes element text; see the module doc for what XML 1.0 cannot hold.
fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let mut rest = chunk.valid();
        while let Some(i) =
            rest.find(|c: char| (c < ' ' && c != '\t' && c != '\n') || c == '\u{FFFE}' || c == '\u{FFFF}')
        {
            out.extend_from_slice(partial_escape(&rest[..i]).as_bytes());
            let c = rest[i..].chars().next().unwrap_or_default();
            out.extend_from_slice(format!("&#x{:X};", c as u32).as_bytes());
            rest = &rest[i + c.len_utf8()..];
        }
        out.extend_from_slice(partial_escape(rest).as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
}

/// `encoding-type=url`: every byte but the unreserved ones and `/` as `%XX`, so that the
/// query-style decoders clients use (`+` is a space to them) give back the key exactly.
pub fn url_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

pub struct Bucket<'a> {
    pub name: &'a str,
    pub created_ms: i64,
}

/// ListBuckets: `prefix` echoed when asked for, `token` when there is a next page.
pub fn list_buckets(buckets: &[Bucket], prefix: Option<&str>, token: Option<&str>) -> Vec<u8> {
    let mut d = Doc::new("ListAllMyBucketsResult");
    d.raw(&format!("<Owner>{OWNER}</Owner><Buckets>"));
    for b in buckets {
        d.open("Bucket");
        d.text("Name", b.name.as_bytes());
        d.date("CreationDate", b.created_ms);
        d.close("Bucket");
    }
    d.close("Buckets");
    if let Some(t) = token {
        d.text("ContinuationToken", t.as_bytes());
    }
    if let Some(p) = prefix {
        d.text("Prefix", p.as_bytes());
    }
    d.end("ListAllMyBucketsResult")
}

/// One object of a listing: `key` within the bucket, `etag` unquoted.
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub last_modified_ms: i64,
    pub etag: &'a str,
    pub size: u64,
}

/// One page of ListObjects (v1). S3 sends `NextMarker` only when a delimiter was given;
/// without one, clients resume after the last `Key` of the page.
pub struct ListV1<'a> {
    pub bucket: &'a str,
    pub params: &'a ListParams,
    pub marker: &'a [u8],
    pub contents: &'a [Entry<'a>],
    pub common_prefixes: &'a [Vec<u8>],
    pub is_truncated: bool,
    pub next_marker: Option<&'a [u8]>,
}

/// One page of ListObjectsV2.
pub struct ListV2<'a> {
    pub bucket: &'a str,
    pub params: &'a ListParams,
    pub continuation_token: Option<&'a str>,
    pub start_after: &'a [u8],
    pub contents: &'a [Entry<'a>],
    pub common_prefixes: &'a [Vec<u8>],
    pub is_truncated: bool,
    pub next_continuation_token: Option<&'a str>,
    pub fetch_owner: bool,
}

fn list_head(d: &mut Doc, bucket: &str, p: &ListParams) {
    d.text("Name", bucket.as_bytes());
    d.key("Prefix", &p.prefix, p.url_encoding);
    if let Some(delim) = &p.delimiter {
        d.key("Delimiter", delim, p.url_encoding);
    }
    d.num("MaxKeys", p.max_keys);
    if p.url_encoding {
        d.text("EncodingType", b"url");
    }
}

fn list_body(d: &mut Doc, contents: &[Entry], prefixes: &[Vec<u8>], url: bool, owner: bool) {
    for e in contents {
        d.open("Contents");
        d.key("Key", e.key, url);
        d.date("LastModified", e.last_modified_ms);
        d.etag(e.etag);
        d.num("Size", e.size);
        if owner {
            d.raw(&format!("<Owner>{OWNER}</Owner>"));
        }
        d.text("StorageClass", b"STANDARD");
        d.close("Contents");
    }
    for p in prefixes {
        d.open("CommonPrefixes");
        d.key("Prefix", p, url);
        d.close("CommonPrefixes");
    }
}

pub fn list_objects_v1(page: &ListV1) -> Vec<u8> {
    let url = page.params.url_encoding;
    let mut d = Doc::new("ListBucketResult");
    list_head(&mut d, page.bucket, page.params);
    d.key("Marker", page.marker, url);
    if let Some(next) = page.next_marker {
        d.key("NextMarker", next, url);
    }
    d.bool("IsTruncated", page.is_truncated);
    list_body(&mut d, page.contents, page.common_prefixes, url, true);
    d.end("ListBucketResult")
}

pub fn list_objects_v2(page: &ListV2) -> Vec<u8> {
    let url = page.params.url_encoding;
    let mut d = Doc::new("ListBucketResult");
    list_head(&mut d, page.bucket, page.params);
    d.num("KeyCount", page.contents.len() + page.common_prefixes.len());
    if let Some(token) = page.continuation_token {
        d.text("ContinuationToken", token.as_bytes());
    }
    if let Some(token) = page.next_continuation_token {
        d.text("NextContinuationToken", token.as_bytes());
    }
    if !page.start_after.is_empty() {
        d.key("StartAfter", page.start_after, url);
    }
    d.bool("IsTruncated", page.is_truncated);
    list_body(&mut d, page.contents, page.common_prefixes, url, page.fetch_owner);
    d.end("ListBucketResult")
}

pub fn initiate_multipart_upload(bucket: &str, key: &[u8], upload_id: &str) -> Vec<u8> {
    let mut d = Doc::new("InitiateMultipartUploadResult");
    d.text("Bucket", bucket.as_bytes());
    d.text("Key", key);
    d.text("UploadId", upload_id.as_bytes());
    d.end("InitiateMultipartUploadResult")
}

/// `location` is the object's URL, e.g. `http://host:3000/bucket/key`.
pub fn complete_multipart_upload(location: &str, bucket: &str, key: &[u8], etag: &str) -> Vec<u8> {
    let mut d = Doc::new("CompleteMultipartUploadResult");
    d.text("Location", location.as_bytes());
    d.text("Bucket", bucket.as_bytes());
    d.text("Key", key);
    d.etag(etag);
    d.end("CompleteMultipartUploadResult")
}

pub struct Part<'a> {
    pub number: u32,
    pub last_modified_ms: i64,
    pub etag: &'a str,
    pub size: u64,
}

pub struct ListPartsPage<'a> {
    pub bucket: &'a str,
    pub key: &'a [u8],
    pub upload_id: &'a str,
    pub part_number_marker: u32,
    pub next_part_number_marker: Option<u32>,
    pub max_parts: usize,
    pub is_truncated: bool,
    pub parts: &'a [Part<'a>],
}

pub fn list_parts(page: &ListPartsPage) -> Vec<u8> {
    let mut d = Doc::new("ListPartsResult");
    d.text("Bucket", page.bucket.as_bytes());
    d.text("Key", page.key);
    d.text("UploadId", page.upload_id.as_bytes());
    d.raw(&format!("<Initiator>{OWNER}</Initiator><Owner>{OWNER}</Owner>"));
    d.text("StorageClass", b"STANDARD");
    d.num("PartNumberMarker", page.part_number_marker);
    if let Some(next) = page.next_part_number_marker {
        d.num("NextPartNumberMarker", next);
    }
    d.num("MaxParts", page.max_parts);
    d.bool("IsTruncated", page.is_truncated);
    for p in page.parts {
        d.open("Part");
        d.num("PartNumber", p.number);
        d.date("LastModified", p.last_modified_ms);
        d.etag(p.etag);
        d.num("Size", p.size);
        d.close("Part");
    }
    d.end("ListPartsResult")
}

pub struct Upload<'a> {
    pub key: &'a [u8],
    pub upload_id: &'a str,
    pub initiated_ms: i64,
}

pub struct ListUploadsPage<'a> {
    pub bucket: &'a str,
    pub params: &'a ListParams,
    pub key_marker: &'a [u8],
    pub upload_id_marker: &'a str,
    pub next_key_marker: Option<&'a [u8]>,
    pub next_upload_id_marker: Option<&'a str>,
    pub is_truncated: bool,
    pub uploads: &'a [Upload<'a>],
    pub common_prefixes: &'a [Vec<u8>],
}

pub fn list_multipart_uploads(page: &ListUploadsPage) -> Vec<u8> {
    let (p, url) = (page.params, page.params.url_encoding);
    let mut d = Doc::new("ListMultipartUploadsResult");
    d.text("Bucket", page.bucket.as_bytes());
    d.key("KeyMarker", page.key_marker, url);
    d.text("UploadIdMarker", page.upload_id_marker.as_bytes());
    if let Some(next) = page.next_key_marker {
        d.key("NextKeyMarker", next, url);
    }
    if let Some(next) = page.next_upload_id_marker {
        d.text("NextUploadIdMarker", next.as_bytes());
    }
    d.key("Prefix", &p.prefix, url);
    if let Some(delim) = &p.delimiter {
        d.key("Delimiter", delim, url);
    }
    d.num("MaxUploads", p.max_keys);
    if url {
        d.text("EncodingType", b"url");
    }
    d.bool("IsTruncated", page.is_truncated);
    for u in page.uploads {
        d.open("Upload");
        d.key("Key", u.key, url);
        d.text("UploadId", u.upload_id.as_bytes());
        d.raw(&format!("<Initiator>{OWNER}</Initiator><Owner>{OWNER}</Owner>"));
        d.text("StorageClass", b"STANDARD");
        d.date("Initiated", u.initiated_ms);
        d.close("Upload");
    }
    for prefix in page.common_prefixes {
        d.open("CommonPrefixes");
        d.key("Prefix", prefix, url);
        d.close("CommonPrefixes");
    }
    d.end("ListMultipartUploadsResult")
}

/// What became of one key of a DeleteObjects.
pub enum Deleted<'a> {
    Ok(&'a [u8]),
    Failed(&'a [u8], &'a S3Error),
}

/// `quiet`: only the failures are listed, as S3 does for `<Quiet>true</Quiet>`.
pub fn delete_result(quiet: bool, outcomes: &[Deleted]) -> Vec<u8> {
    let mut d = Doc::new("DeleteResult");
    for o in outcomes {
        match o {
            Deleted::Ok(key) if !quiet => {
                d.open("Deleted");
                d.text("Key", key);
                d.close("Deleted");
            }
            Deleted::Ok(_) => {}
            Deleted::Failed(key, e) => {
                d.open("Error");
                d.text("Key", key);
                d.text("Code", e.code().as_bytes());
                d.text("Message", e.message().as_bytes());
                d.close("Error");
            }
        }
    }
    d.end("DeleteResult")
}

pub fn copy_object_result(etag: &str, last_modified_ms: i64) -> Vec<u8> {
    copy_result("CopyObjectResult", etag, last_modified_ms)
}

pub fn copy_part_result(etag: &str, last_modified_ms: i64) -> Vec<u8> {
    copy_result("CopyPartResult", etag, last_modified_ms)
}

fn copy_result(root: &str, etag: &str, ms: i64) -> Vec<u8> {
    let mut d = Doc::new(root);
    d.date("LastModified", ms);
    d.etag(etag);
    d.end(root)
}

/// GetBucketLocation: empty for us-east-1, as S3 answers.
pub fn location_constraint(region: &str) -> Vec<u8> {
    let region = if region == "us-east-1" { "" } else { region };
    let mut d = Doc::new("LocationConstraint");
    escape(&mut d.0, region.as_bytes());
    d.end("LocationConstraint")
}

/// GetBucketVersioning of a bucket whose versioning was never enabled: no `<Status>`.
pub fn versioning_configuration() -> Vec<u8> {
    Doc::new("VersioningConfiguration").end("VersioningConfiguration")
}

/// `<Error>` without a namespace, as S3 sends it. `resource` is the request path.
pub fn error(e: &S3Error, resource: &[u8], request_id: &str) -> Vec<u8> {
    let mut d = Doc(Vec::with_capacity(256));
    d.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
    d.text("Code", e.code().as_bytes());
    d.text("Message", e.message().as_bytes());
    d.text("Resource", resource);
    d.text("RequestId", request_id.as_bytes());
    d.end("Error")
}

/// An element of a request body: local name (namespace prefix dropped), text, children.
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: Vec<u8>,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_trimmed(&self) -> &[u8] {
        self.text.trim_ascii()
    }
}

/// Parses a request body into a tree: namespaces ignored, no DTD (so no entity but XML's
/// five), at most `max_nodes` elements, [`MAX_DEPTH`] deep, [`MAX_XML_BODY`] long.
fn tree(body: &[u8], max_nodes: usize) -> Result<Node, S3Error> {
    const BAD: S3Error = S3Error::MalformedXML;
    if body.len() > MAX_XML_BODY {
        return Err(S3Error::EntityTooLarge);
    }
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    let mut nodes = 0;
    let mut start =
        |e: &quick_xml::events::BytesStart, stack: &Vec<Node>, root: &Option<Node>| -> Result<Node, S3Error> {
            nodes += 1;
            if nodes > max_nodes || stack.len() >= MAX_DEPTH || (stack.is_empty() && root.is_some()) {
                return Err(BAD);
            }
            let name = std::str::from_utf8(e.local_name().into_inner()).map_err(|_| BAD)?.to_owned();
            Ok(Node { name, ..Node::default() })
        };
    loop {
        match reader.read_event().map_err(|_| BAD)? {
            Event::Start(e) => {
                let n = start(&e, &stack, &root)?;
                stack.push(n);
            }
            Event::Empty(e) => {
                let n = start(&e, &stack, &root)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => root = Some(n),
                }
            }
            Event::End(_) => {
                let n = stack.pop().ok_or(BAD)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => root = Some(n),
                }
            }
            Event::Text(t) => {
                let text = t.xml_content().map_err(|_| BAD)?;
                match stack.last_mut() {
                    Some(n) => n.text.extend_from_slice(text.as_bytes()),
                    None if text.trim().is_empty() => {}
                    None => return Err(BAD),
                }
            }
            Event::CData(t) => stack.last_mut().ok_or(BAD)?.text.extend_from_slice(&t),
            Event::GeneralRef(r) => {
                let node = stack.last_mut().ok_or(BAD)?;
                let c = match r.resolve_char_ref().map_err(|_| BAD)? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|_| BAD)?;
                        quick_xml::escape::resolve_predefined_entity(&name).ok_or(BAD)?.to_owned()
                    }
                };
                node.text.extend_from_slice(c.as_bytes());
            }
            Event::DocType(_) => return Err(BAD),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    match (root, stack.is_empty()) {
        (Some(root), true) => Ok(root),
        _ => Err(BAD),
    }
}

/// A CompleteMultipartUpload body → the parts it lists, in the order given: ascending part numbers (`InvalidPartOrder` otherwise), at least one part.
pub fn parse_complete(body: &[u8]) -> Result<Vec<Listed>, S3Error> {
    let root = tree(body, 8 * MAX_PART as usize + 8)?;
    if root.name != "CompleteMultipartUpload" {
        return Err(S3Error::MalformedXML);
    }
    let mut parts: Vec<Listed> = Vec::new();
    for p in root.children.iter().filter(|c| c.name == "Part") {
        let number = p.child("PartNumber").map(Node::text_trimmed).ok_or(S3Error::MalformedXML)?;
        let number: u32 = std::str::from_utf8(number).ok().and_then(|n| n.parse().ok()).ok_or(S3Error::MalformedXML)?;
        if !(1..=MAX_PART).contains(&number) {
            return Err(S3Error::InvalidArgument("Part number must be an integer between 1 and 10000, inclusive"));
        }
        let etag = p.child("ETag").map(Node::text_trimmed).ok_or(S3Error::MalformedXML)?;
        let etag = std::str::from_utf8(etag).map_err(|_| S3Error::InvalidPart)?;
        let etag = etag.strip_prefix('"').and_then(|e| e.strip_suffix('"')).unwrap_or(etag);
        if parts.last().is_some_and(|last| last.number >= number) {
            return Err(S3Error::InvalidPartOrder);
        }
        let checksum = Algorithm::ALL
            .into_iter()
            .find_map(|alg| Some((alg, p.child(alg.xml_name()?)?)))
            .map(|(alg, v)| Digest::from_base64(alg, v.text_trimmed()))
            .transpose()?;
        parts.push(Listed { number, etag: etag.to_owned(), checksum });
    }
    if parts.is_empty() {
        return Err(S3Error::MalformedXML);
    }
    Ok(parts)
}

/// One `<Part>` a CompleteMultipartUpload body lists.
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    pub number: u32,
    /// Unquoted.
    pub etag: String,
    /// Its `<ChecksumCRC32>` (or another algorithm's): the part's bytes must have it.
    pub checksum: Option<Digest>,
}

/// A Delete body: the keys (as bytes, untrimmed: a key may end in a space) and `Quiet`.
/// `<VersionId>` other than `null` is refused per key by the caller (`NoSuchVersion`).
#[derive(Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub objects: Vec<ToDelete>,
}

/// One `<Object>` of a DeleteObjects body.
#[derive(Debug, PartialEq, Eq)]
pub struct ToDelete {
    pub key: Vec<u8>,
    pub version: Option<String>,
    /// `<ETag>`: delete only while the object has it (S3's conditional delete).
    pub etag: Option<Vec<u8>>,
}

/// A CreateBucket body: the `LocationConstraint` it names, if any (an empty body names none).
/// A name that is not a plain region name (letters, digits, `-`) is `InvalidLocationConstraint`.
pub fn parse_create_bucket(body: &[u8]) -> Result<Option<String>, S3Error> {
    if body.trim_ascii().is_empty() {
        return Ok(None);
    }
    let root = tree(body, 8)?;
    if root.name != "CreateBucketConfiguration" {
        return Err(S3Error::MalformedXML);
    }
    let Some(c) = root.child("LocationConstraint").map(Node::text_trimmed).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let plain = c.len() <= 64 && c.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
    match std::str::from_utf8(c) {
        Ok(name) if plain => Ok(Some(name.to_string())),
        _ => Err(S3Error::InvalidLocationConstraint),
    }
}

pub fn parse_delete(body: &[u8]) -> Result<DeleteRequest, S3Error> {
    let root = tree(body, 4 * MAX_LIST + 8)?;
    if root.name != "Delete" {
        return Err(S3Error::MalformedXML);
    }
    let quiet = match root.child("Quiet").map(Node::text_trimmed) {
        None => false,
        Some(q) if q.eq_ignore_ascii_case(b"true") => true,
        Some(q) if q.eq_ignore_ascii_case(b"false") => false,
        Some(_) => return Err(S3Error::MalformedXML),
    };
    let mut objects = Vec::new();
    for o in root.children.iter().filter(|c| c.name == "Object") {
        // one Key an Object: a second one was dropped unsaid
        if o.children.iter().filter(|c| c.name == "Key").count() != 1 {
            return Err(S3Error::MalformedXML);
        }
        let key = o.child("Key").ok_or(S3Error::MalformedXML)?.text.clone();
        let version = o.child("VersionId").map(|v| String::from_utf8_lossy(v.text_trimmed()).into_owned());
        let etag = o.child("ETag").map(|e| e.text_trimmed().to_vec());
        objects.push(ToDelete { key, version, etag });
    }
    if objects.is_empty() || objects.len() > MAX_LIST {
        return Err(S3Error::MalformedXML);
    }
    Ok(DeleteRequest { quiet, objects })
}

#[cfg(test)]
mod tests;
