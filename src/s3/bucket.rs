//! Buckets and listings. A bucket is the first segment of native keys (`/BUCKET/…`): it
//! exists while it holds live keys, or once CreateBucket named it (remembered in the index
//! until DeleteBucket). Listings read the `live` family in key order, with `delimiter`
//! grouping done by seeking past each common prefix rather than reading its keys.

use super::{
    error::S3Error,
    request::{continuation_token, ListParams},
    serve::{checked_body, ok, Answer, Failure, Req},
    sigv4::Verified,
    stored::{etag, Stored},
    xml,
};
use crate::{
    http::{Body, Conn},
    index::State,
    record::{now_ms, Record, RecordRef},
    store::{self, Ctx},
};

/// Index setting naming a bucket made by CreateBucket (value: its creation time, ms).
const BUCKET: &str = "s3-bucket/";
/// Most keys a DeleteObjects names (S3's own limit).
const MAX_DELETE: usize = 1000;

/// `/BUCKET/`: the native prefix of a bucket's keys.
fn prefix_of(bucket: &str) -> Vec<u8> {
    format!("/{bucket}/").into_bytes()
}

/// Whether a bucket holds live keys.
fn has_keys(ctx: &Ctx, bucket: &str) -> Result<bool, Failure> {
    let mut scan = ctx.shared.index.scan(State::Live, &prefix_of(bucket), b"");
    let found = scan.next().is_some();
    scan.status().map_err(store::Error::from)?;
    Ok(found)
}

fn created(ctx: &Ctx, bucket: &str) -> Result<Option<Created>, Failure> {
    let v = ctx.shared.index.meta(&format!("{BUCKET}{bucket}")).map_err(store::Error::from)?;
    Ok(v.as_deref().and_then(Created::decode))
}

/// What CreateBucket remembers of a bucket: when (ms), and the `LocationConstraint` it
/// named (clients that asked for a region read it back with GetBucketLocation).
struct Created {
    ms: i64,
    location: Option<String>,
}

impl Created {
    /// The time's 8 bytes (little-endian), then the location's name if any (records written
    /// before locations were kept hold the time alone).
    fn encode(&self) -> Vec<u8> {
        let mut v = self.ms.to_le_bytes().to_vec();
        v.extend_from_slice(self.location.as_deref().unwrap_or("").as_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<Created> {
        let (ms, location) = v.split_at_checked(8)?;
        let ms = i64::from_le_bytes(ms.try_into().ok()?);
        let location = std::str::from_utf8(location).ok().filter(|l| !l.is_empty()).map(str::to_string);
        Some(Created { ms, location })
    }
}

/// HeadBucket's region: [`location`]; `404 NoSuchBucket` for a bucket that does not exist.
pub fn region(ctx: &Ctx, bucket: &str) -> Result<String, Failure> {
    must_exist(ctx, bucket)?;
    location(ctx, bucket)
}

/// GetBucketLocation: the bucket's `LocationConstraint`, or the server's own region, also
/// for a bucket that does not exist (yet): buckets are implicit, a PutObject into any works,
/// and a client given no region (MinIO's SDK) asks where a bucket is before its first write
/// to it, which failed on a `404`.
pub fn location(ctx: &Ctx, bucket: &str) -> Result<String, Failure> {
    Ok(created(ctx, bucket)?.and_then(|c| c.location).unwrap_or_else(|| super::serve::REGION.to_string()))
}

/// `404 NoSuchBucket` for a bucket that holds nothing and was never created.
pub fn must_exist(ctx: &Ctx, bucket: &str) -> Result<(), Failure> {
    if created(ctx, bucket)?.is_some() || has_keys(ctx, bucket)? {
        Ok(())
    } else {
        Err(S3Error::NoSuchBucket.into())
    }
}

/// ListBuckets: buckets made by CreateBucket, and every first path segment holding live
/// keys (found by seeking from one segment to the next, not by reading every key). An
/// implicit bucket is dated by the first key met in it (the index keeps no earlier date, and
/// 1970 makes tools that sort or age buckets misbehave).
pub fn list_buckets(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req,
    prefix: &str,
    max: Option<usize>,
    after: Option<String>,
) -> Result<Answer, Failure> {
    let index = &ctx.shared.index;
    let mut names: Vec<(String, i64)> = Vec::new();
    for (name, v) in index.meta_with(BUCKET).map_err(store::Error::from)? {
        let ms = Created::decode(&v).map_or(0, |c| c.ms);
        names.push((name[BUCKET.len()..].to_string(), ms));
    }
    let mut start = b"/".to_vec();
    loop {
        let next = {
            let mut scan = index.scan(State::Live, b"/", &start);
            let found = scan.next().map(|(k, v)| (k.to_vec(), RecordRef::parse(v).map(|r| r.mtime).unwrap_or(0)));
            scan.status().map_err(store::Error::from)?;
            found
        };
        let Some((k, mtime)) = next else { break };
        let rest = &k[1..];
        match rest.iter().position(|&b| b == b'/') {
            Some(i) => {
                if let Ok(name) = std::str::from_utf8(&rest[..i]) {
                    if super::request::reachable_bucket(name) && !names.iter().any(|(n, _)| n == name) {
                        names.push((name.to_string(), mtime as i64));
                    }
                }
                // past every key of this segment: `/NAME0` (`0` follows `/`)
                start = k[..=i].to_vec();
                start.push(b'0');
            }
            // a native key without a bucket segment: the next key
            None => {
                start = k;
                start.push(0);
            }
        }
    }
    names.retain(|(n, _)| n.starts_with(prefix) && after.as_ref().is_none_or(|a| n > a));
    names.sort();
    let more = max.is_some_and(|m| names.len() > m);
    names.truncate(max.unwrap_or(usize::MAX));
    let buckets: Vec<xml::Bucket> = names.iter().map(|(n, ms)| xml::Bucket { name: n, created_ms: *ms }).collect();
    // the token is the last name of this page: the next starts after it
    let token = more.then(|| names.last().map(|(n, _)| n.as_str())).flatten();
    let asked = (!prefix.is_empty()).then_some(prefix);
    Ok(ok(conn, req, 200, Some(xml::list_buckets(&buckets, asked, token))))
}

pub async fn create(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    body: &mut Body,
    bucket: &str,
    verified: Verified,
) -> Result<Answer, Failure> {
    // a CreateBucketConfiguration may name a location: kept for GetBucketLocation (mkv has
    // one place, so it changes nothing else). Creating a bucket again keeps what it had.
    let doc = checked_body(conn, req, body, verified, 64 << 10, true, "an aws-chunked CreateBucket body").await?;
    let location = xml::parse_create_bucket(&doc)?;
    if created(ctx, bucket)?.is_none() {
        let c = Created { ms: now_ms() as i64, location };
        ctx.shared.index.set_meta(&format!("{BUCKET}{bucket}"), &c.encode()).map_err(store::Error::from)?;
    }
    let a = ok(conn, req, 200, None);
    crate::http::response::header(&mut conn.out, "Location", &[b"/", bucket.as_bytes()]);
    Ok(a)
}

pub fn head(ctx: &Ctx, conn: &mut Conn, req: &Req, bucket: &str) -> Result<Answer, Failure> {
    let region = region(ctx, bucket)?;
    let a = ok(conn, req, 200, None);
    crate::http::response::header(&mut conn.out, "x-amz-bucket-region", &[region.as_bytes()]);
    Ok(a)
}

/// DeleteBucket: `204` once the bucket holds no key, `409 BucketNotEmpty` while it does. A
/// bucket nobody created has just lost its last key when clients delete it (`aws s3 rb
/// --force`, `rclone purge`, `s3cmd rb` empty it first), so it is gone already: `204` too.
/// `409 BucketNotEmpty` while `bucket` holds live keys.
pub fn must_be_empty(ctx: &Ctx, bucket: &str) -> Result<(), Failure> {
    match has_keys(ctx, bucket)? {
        true => Err(S3Error::BucketNotEmpty.into()),
        false => Ok(()),
    }
}

/// DeleteBucket, once its uploads in progress are gone (the caller aborts them).
pub fn delete(ctx: &Ctx, conn: &mut Conn, req: &Req, bucket: &str) -> Result<Answer, Failure> {
    must_be_empty(ctx, bucket)?;
    if created(ctx, bucket)?.is_some() {
        ctx.shared.index.remove_meta(&format!("{BUCKET}{bucket}")).map_err(store::Error::from)?;
    }
    Ok(ok(conn, req, 204, None))
}

/// One page of a bucket listing.
struct Page {
    /// (key within the bucket, last modified ms, etag, size)
    contents: Vec<(Vec<u8>, i64, String, u64)>,
    prefixes: Vec<Vec<u8>>,
    truncated: bool,
    /// The last key or common prefix returned, when truncated (where the next page starts after).
    last: Option<Vec<u8>>,
}

/// Reads up to `max_keys` entries of `bucket` under `list.prefix`, after `after` (a key
/// within the bucket; exclusive), grouping by `list.delimiter`.
fn page(ctx: &Ctx, bucket: &str, list: &ListParams, after: &[u8]) -> Result<Page, Failure> {
    let base = prefix_of(bucket);
    let mut prefix = base.clone();
    prefix.extend_from_slice(&list.prefix);
    let mut start = base.clone();
    start.extend_from_slice(after);
    if !after.is_empty() {
        start.push(0);
    }
    let mut p = Page { contents: Vec::new(), prefixes: Vec::new(), truncated: false, last: None };
    if list.max_keys == 0 {
        // S3 answers nothing and not truncated: with no token to go on, a client looping on
        // IsTruncated would never end
        return Ok(p);
    }
    let index = &ctx.shared.index;
    'outer: loop {
        let mut scan = index.scan(State::Live, &prefix, &start);
        let mut jump: Option<Vec<u8>> = None;
        while let Some((k, v)) = scan.next() {
            let name = &k[base.len()..];
            let group = list.delimiter.as_ref().filter(|d| !d.is_empty()).and_then(|d| {
                let rest = &name[list.prefix.len()..];
                rest.windows(d.len())
                    .position(|w| w == &d[..])
                    .map(|i| name[..list.prefix.len() + i + d.len()].to_vec())
            });
            if p.contents.len() + p.prefixes.len() == list.max_keys
                && group.as_ref().is_none_or(|g| g.as_slice() != after)
            {
                p.truncated = true;
                break 'outer;
            }
            match group {
                Some(g) => {
                    // a marker that is this common prefix (a page's NextMarker or token) was
                    // given on that page; one inside it (a client's own start-after) was not:
                    // the prefix still holds keys after it, as S3 lists it
                    if g.as_slice() != after {
                        p.last = Some(g.clone());
                        p.prefixes.push(g.clone());
                    }
                    // past every key under this common prefix by one seek
                    let mut next = base.clone();
                    next.extend_from_slice(&g);
                    jump = Some(successor(next));
                    break;
                }
                None => {
                    let rec = RecordRef::parse(v).map_err(|e| store::Error::Index(e.into()))?;
                    let stored = Stored::decode(rec.meta);
                    let light = Record { md5: rec.md5.copied(), mtime: rec.mtime, size: rec.size, ..Record::default() };
                    p.last = Some(name.to_vec());
                    p.contents.push((name.to_vec(), rec.mtime as i64, etag(&light, &stored), rec.size));
                }
            }
        }
        scan.status().map_err(store::Error::from)?;
        match jump {
            Some(j) if !j.is_empty() => start = j,
            _ => break,
        }
    }
    if !p.truncated {
        p.last = None;
    }
    Ok(p)
}

/// The smallest key after every key that starts with `p`.
fn successor(mut p: Vec<u8>) -> Vec<u8> {
    while let Some(&last) = p.last() {
        if last < 0xff {
            *p.last_mut().unwrap_or(&mut 0) = last + 1;
            return p;
        }
        p.pop();
    }
    // every byte was 0xff: nothing follows; an empty key makes the caller stop
    p
}

fn entries(p: &Page) -> Vec<xml::Entry<'_>> {
    p.contents
        .iter()
        .map(|(k, ms, etag, size)| xml::Entry { key: k, last_modified_ms: *ms, etag, size: *size })
        .collect()
}

pub fn list_v1(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req,
    bucket: &str,
    list: &ListParams,
    marker: &[u8],
) -> Result<Answer, Failure> {
    must_exist(ctx, bucket)?;
    let p = page(ctx, bucket, list, marker)?;
    let contents = entries(&p);
    // S3 gives NextMarker only with a delimiter; clients use the last key otherwise
    let next_marker = if list.delimiter.is_some() { p.last.as_deref() } else { None };
    let body = xml::list_objects_v1(&xml::ListV1 {
        bucket,
        params: list,
        marker,
        contents: &contents,
        common_prefixes: &p.prefixes,
        is_truncated: p.truncated,
        next_marker,
    });
    Ok(ok(conn, req, 200, Some(body)))
}

#[allow(clippy::too_many_arguments)]
pub fn list_v2(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req,
    bucket: &str,
    list: &ListParams,
    continuation: Option<Vec<u8>>,
    start_after: &[u8],
    fetch_owner: bool,
) -> Result<Answer, Failure> {
    must_exist(ctx, bucket)?;
    let after = continuation.as_deref().unwrap_or(start_after);
    let p = page(ctx, bucket, list, after)?;
    let contents = entries(&p);
    let token_in = req_token(req);
    let next = p.last.as_deref().map(continuation_token);
    let body = xml::list_objects_v2(&xml::ListV2 {
        bucket,
        params: list,
        continuation_token: token_in.as_deref(),
        start_after,
        contents: &contents,
        common_prefixes: &p.prefixes,
        is_truncated: p.truncated,
        next_continuation_token: next.as_deref(),
        fetch_owner,
    });
    Ok(ok(conn, req, 200, Some(body)))
}

/// The `continuation-token` as the client sent it (echoed in the answer).
fn req_token(req: &Req) -> Option<String> {
    let q = super::request::Query::parse(req.query).ok()?;
    q.get("continuation-token").and_then(|v| String::from_utf8(v.to_vec()).ok())
}

/// DeleteObjects: each key named deleted (a missing one counts as deleted, as in S3).
pub async fn delete_objects(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    body: &mut Body,
    bucket: &str,
    verified: Verified,
) -> Result<Answer, Failure> {
    let what = "an aws-chunked DeleteObjects body";
    let doc = checked_body(conn, req, body, verified, super::xml::MAX_XML_BODY, true, what).await?;
    let asked = xml::parse_delete(&doc)?;
    if asked.objects.len() > MAX_DELETE {
        return Err(S3Error::MalformedXML.into());
    }
    let mut results: Vec<(Vec<u8>, Option<S3Error>)> = Vec::with_capacity(asked.objects.len());
    let mut deferred: Option<(usize, crate::volume::Error)> = None;
    for o in &asked.objects {
        let native = super::request::Object { bucket: bucket.to_string(), key: o.key.clone() }.native_key();
        let write_if = super::meta::Conditions { if_match: o.etag.clone(), ..Default::default() };
        // mkv keeps no versions: one asked for is not there (and the live object stays)
        let r = if o.version.as_deref().is_some_and(|v| v != "null") {
            Some(S3Error::NoSuchVersion)
        } else if o.key.is_empty() {
            // its native key is `/BUCKET/`: no object, and nothing to delete there
            Some(S3Error::UserKeyMustBeSpecified)
        } else {
            match super::object::delete_if(ctx, &native, &write_if, true).await {
                Ok(unreached) => {
                    // one line for the request, not one a key (up to 1000)
                    if let Some(e) = unreached {
                        deferred.get_or_insert((0, e)).0 += 1;
                    }
                    None
                }
                Err(f) => Some(f.error),
            }
        };
        results.push((o.key.clone(), r));
    }
    if let Some((n, e)) = deferred {
        eprintln!("mkv: S3 DeleteObjects in {bucket}: {n} object(s) gone with a volume out of reach ({e}); their files there go once it is back");
    }
    let outcomes: Vec<xml::Deleted> = results
        .iter()
        .map(|(k, e)| match e {
            None => xml::Deleted::Ok(k),
            Some(e) => xml::Deleted::Failed(k, e),
        })
        .collect();
    Ok(ok(conn, req, 200, Some(xml::delete_result(asked.quiet, &outcomes))))
}
