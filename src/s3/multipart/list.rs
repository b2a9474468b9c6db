//! Listing uploads in progress (ListMultipartUploads) and their parts (ListParts).

use super::{parts, upload, uploads_of};
use crate::{
    http::Conn,
    s3::{
        request::{ListParams, Object},
        serve::{ok, Answer, Failure, Req},
        xml,
    },
    store::Ctx,
};

pub fn list_parts(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req,
    obj: &Object,
    id: &str,
    max_parts: usize,
    marker: u32,
) -> Result<Answer, Failure> {
    upload(ctx, obj, id)?;
    let mut page = parts(ctx, id, marker, max_parts + 1)?;
    // max-parts=0: an empty page that is not truncated, as S3's listings answer max-keys=0
    // (a truncated page with no part on it would have no marker to go on from)
    let truncated = max_parts > 0 && page.len() > max_parts;
    page.truncate(max_parts);
    let etags: Vec<String> = page.iter().map(|(_, p)| p.etag()).collect();
    let listed: Vec<xml::Part> = page
        .iter()
        .zip(&etags)
        .map(|((n, p), e)| xml::Part { number: *n, last_modified_ms: p.mtime_ms as i64, etag: e, size: p.size })
        .collect();
    let body = xml::list_parts(&xml::ListPartsPage {
        bucket: &obj.bucket,
        key: &obj.key,
        upload_id: id,
        part_number_marker: marker,
        next_part_number_marker: if truncated { page.last().map(|(n, _)| *n) } else { None },
        max_parts,
        is_truncated: truncated,
        parts: &listed,
    });
    Ok(ok(conn, req, 200, Some(body)))
}

pub fn list_uploads(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req,
    bucket: &str,
    list: &ListParams,
    key_marker: &[u8],
    id_marker: &str,
) -> Result<Answer, Failure> {
    let mut all = uploads_of(ctx, bucket)?;
    // a bucket that holds only uploads in progress exists (its uploads are listed)
    if all.is_empty() {
        crate::s3::bucket::must_exist(ctx, bucket)?;
    }
    all.retain(|(key, _, _)| key.starts_with(&list.prefix));
    all.sort();
    let page = uploads_page(&all, list, key_marker, id_marker);
    let uploads: Vec<xml::Upload> = page
        .uploads
        .iter()
        .map(|(k, id, ms)| xml::Upload { key: k, upload_id: id, initiated_ms: *ms as i64 })
        .collect();
    let body = xml::list_multipart_uploads(&xml::ListUploadsPage {
        bucket,
        params: list,
        key_marker,
        upload_id_marker: id_marker,
        next_key_marker: page.next.as_ref().map(|(k, _)| k.as_slice()),
        next_upload_id_marker: page.next.as_ref().and_then(|(_, id)| id.as_deref()),
        is_truncated: page.next.is_some(),
        uploads: &uploads,
        common_prefixes: &page.prefixes,
    });
    Ok(ok(conn, req, 200, Some(body)))
}

/// One page of ListMultipartUploads.
#[derive(Debug, PartialEq, Eq)]
struct UploadsPage<'a> {
    uploads: Vec<&'a (Vec<u8>, String, u64)>,
    prefixes: Vec<Vec<u8>>,
    /// When truncated: the last key or common prefix given, and the last upload id (none
    /// when the page ended on a common prefix).
    next: Option<(Vec<u8>, Option<String>)>,
}

/// Picks a page from `all` (key within the bucket, upload id, time; sorted, under the
/// prefix) as S3 does: after `key_marker` (every upload of it, or with `id_marker` those
/// after that id), keys holding the delimiter past the prefix grouped into common
/// prefixes, at most `max_keys` uploads and prefixes in all.
fn uploads_page<'a>(
    all: &'a [(Vec<u8>, String, u64)],
    list: &ListParams,
    key_marker: &[u8],
    id_marker: &str,
) -> UploadsPage<'a> {
    let delimiter = list.delimiter.as_deref().filter(|d| !d.is_empty());
    let mut page = UploadsPage { uploads: Vec::new(), prefixes: Vec::new(), next: None };
    let mut last: Option<(Vec<u8>, Option<String>)> = None;
    for entry in all {
        let (key, id, _) = entry;
        let group = delimiter.and_then(|d| {
            let rest = &key[list.prefix.len()..];
            rest.windows(d.len()).position(|w| w == d).map(|i| key[..list.prefix.len() + i + d.len()].to_vec())
        });
        let given = match &group {
            // a common prefix comes once, and not again on the pages after it
            Some(g) => page.prefixes.last() == Some(g) || (!key_marker.is_empty() && g.as_slice() <= key_marker),
            None => {
                !key_marker.is_empty()
                    && (key.as_slice() < key_marker
                        || (key.as_slice() == key_marker && (id_marker.is_empty() || id.as_str() <= id_marker)))
            }
        };
        if given {
            continue;
        }
        if page.uploads.len() + page.prefixes.len() == list.max_keys {
            page.next = last;
            break;
        }
        match group {
            Some(g) => {
                last = Some((g.clone(), None));
                page.prefixes.push(g);
            }
            None => {
                last = Some((key.clone(), Some(id.clone())));
                page.uploads.push(entry);
            }
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_pages() {
        let all: Vec<(Vec<u8>, String, u64)> = [("a", "1"), ("a", "2"), ("d/x", "3"), ("d/y", "4"), ("e", "5")]
            .iter()
            .map(|(k, id)| (k.as_bytes().to_vec(), id.to_string(), 0))
            .collect();
        let params = |delimiter: Option<&str>, max_keys| ListParams {
            prefix: Vec::new(),
            delimiter: delimiter.map(|d| d.as_bytes().to_vec()),
            max_keys,
            url_encoding: false,
        };
        let keys = |p: &UploadsPage| {
            p.uploads.iter().map(|(k, id, _)| format!("{}:{id}", String::from_utf8_lossy(k))).collect::<Vec<_>>()
        };
        let p = uploads_page(&all, &params(Some("/"), 1000), b"", "");
        assert_eq!(
            (keys(&p), p.prefixes.clone(), p.next.clone()),
            (vec!["a:1".into(), "a:2".into(), "e:5".into()], vec![b"d/".to_vec()], None)
        );
        // pages of two with the delimiter: [a:1, a:2], [d/, e:5]
        let p = uploads_page(&all, &params(Some("/"), 2), b"", "");
        assert_eq!(p.next, Some((b"a".to_vec(), Some("2".into()))));
        let p = uploads_page(&all, &params(Some("/"), 2), b"a", "2");
        assert_eq!((keys(&p), p.prefixes.clone(), p.next.clone()), (vec!["e:5".into()], vec![b"d/".to_vec()], None));
        // a page that ends on a common prefix resumes after all of it
        let p = uploads_page(&all, &params(Some("/"), 3), b"", "");
        assert_eq!(p.next, Some((b"d/".to_vec(), None)));
        let p = uploads_page(&all, &params(Some("/"), 3), b"d/", "");
        assert_eq!((keys(&p), p.prefixes.clone()), (vec!["e:5".into()], Vec::<Vec<u8>>::new()));
        // a key marker alone skips every upload of that key; with an id, those up to it
        assert_eq!(keys(&uploads_page(&all, &params(None, 1000), b"a", "")), ["d/x:3", "d/y:4", "e:5"]);
        assert_eq!(keys(&uploads_page(&all, &params(None, 1000), b"a", "1")), ["a:2", "d/x:3", "d/y:4", "e:5"]);
        assert!(uploads_page(&all, &params(None, 0), b"", "").uploads.is_empty());
    }
}
