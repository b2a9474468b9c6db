//! Multipart uploads. An upload and its parts are records in the index (family
//! `multipart`), so an upload survives a master restart; each part is written to the
//! volumes like a value (replicated, streamed) at `[/svXX]/_parts/<upload>.<part>.<id>`,
//! which no listing shows. Complete streams the parts, in order, into the key's replicas in
//! bounded memory, then deletes them; Abort deletes them. A Complete notes what it writes
//! first, so that one a crash cut short is finished, or not, by the object's record
//! ([`settle_completes`]).

use std::time::Duration;

use bytes::Bytes;

use super::{
    body::S3Body,
    checksum::multipart_etag,
    error::S3Error,
    meta::{Conditions, Metadata},
    object::{claim_for_write, claim_waiting, write_failure, BUSY_WAIT},
    payload::Payload,
    request::Object,
    serve::{checked_body, ok, patiently, start, Answer, Failure, Req},
    sigv4::Verified,
    stored::{etag, Stored},
    xml,
};
use crate::{
    http::{response, Body, Conn, Reply},
    index::Index,
    placement::{targets, PARTS_DIR},
    record::now_ms,
    store::{
        self,
        read::{self, Reader},
        write::{self, Failed, PutOpts, Source},
        Ctx,
    },
    volume::{self, Download},
};

mod check;
mod complete;
mod list;
mod moves;
mod records;
mod sums;

pub use check::{check_parts, CheckOpts, Damage, PartsChecked};
pub use complete::complete;
use complete::*;
pub use list::{list_parts, list_uploads};
pub use moves::{relocate_parts, PartMove, PartName};
use records::*;

/// S3's smallest part but the last.
const MIN_PART: u64 = 5 << 20;
/// Parts read from the index per page (ListParts, Complete, Abort).
const PAGE: usize = 1000;

/// Hands the parts whose writing a crash or a stop cut (their notes, [`writing_key`]) to
/// [`sweep`], which deletes their files. Run at start, before any request: every such note
/// then is a previous run's. How many there were.
pub fn adopt_cut_parts(index: &Index) -> Result<usize, crate::index::Error> {
    let cut = scan_index(index, b"w/")?;
    for (k, v) in &cut {
        let Some(p) = Part::decode(v) else { continue };
        index.mp_write(&[(&leftover_key(&p), v)], std::slice::from_ref(k))?;
    }
    Ok(cut.len())
}

/// Notes `p`'s files for [`sweep`] when deleting them failed now.
fn leave_for_sweep(ctx: &Ctx, p: &Part, why: &volume::Error) {
    eprintln!("mkv: S3 part {}: could not delete its files yet ({why}); retrying in the background", p.file);
    if let Err(e) = ctx.shared.index.mp_put(&leftover_key(p), &p.encode()) {
        eprintln!("mkv: S3 part {}: could not keep note of its files: {e}", p.file);
    }
}

/// Deletes `p`'s files, or notes them for [`sweep`] when a volume cannot delete them now.
async fn delete_files(ctx: &Ctx, topo: &volume::Topology, p: &Part) {
    if let Err(why) = ctx.client.delete_all(topo, &targets(&p.replicas, &p.path())).await {
        leave_for_sweep(ctx, p, &why);
    }
}

/// Deletes the files of a part whose upload failed (those it made), then its
/// [`writing_key`] note.
async fn drop_written(ctx: &Ctx, topo: &volume::Topology, p: &Part) {
    if let Err(why) = ctx.client.delete_present(topo, &targets(&p.replicas, &p.path())).await {
        leave_for_sweep(ctx, p, &why);
    }
    if let Err(e) = ctx.shared.index.mp_delete(&[writing_key(p)]) {
        eprintln!("mkv: S3 part {}: could not drop the note of its writing: {e}", p.file);
    }
}

/// Deletes the files of ended uploads' parts that a volume down kept ([`forget`] noted
/// them); the server runs it while it runs. How many parts it cleared.
pub async fn sweep(ctx: &Ctx) -> Result<usize, store::Error> {
    expire_completed(ctx)?;
    settle_completes(ctx).await?;
    let mut cleared = 0;
    let topo = ctx.topo();
    for (k, v) in scan_all(ctx, b"g/")? {
        let Some(p) = Part::decode(&v) else { continue };
        if topo.all_up(&p.replicas).is_err() {
            continue;
        }
        // retried every second until every volume took it: the files deleted already are
        // not asked for again with a DELETE (nginx logs each of a missing file as an error)
        if ctx.client.delete_present(&topo, &targets(&p.replicas, &p.path())).await.is_ok() {
            ctx.shared.index.mp_delete(&[k])?;
            cleared += 1;
        }
    }
    Ok(cleared)
}

/// The records that name part files: the parts of uploads in progress (`p/`), those of
/// ended uploads a volume down kept (`g/`, for [`sweep`]), and those being written (`w/`).
const NAMING_FILES: [&[u8]; 3] = [b"p/", b"g/", b"w/"];

/// The file names (under [`PARTS_DIR`]) that part records name: the parts of uploads in
/// progress, and those of ended uploads still to delete. `mkv verify` takes any other part
/// file for an orphan.
pub fn part_files(index: &Index) -> Result<std::collections::HashSet<String>, crate::index::Error> {
    let mut names = std::collections::HashSet::new();
    for prefix in NAMING_FILES {
        let records = scan_index(index, prefix)?;
        names.extend(records.iter().filter_map(|(_, v)| Part::decode(v)).map(|p| p.file));
    }
    Ok(names)
}

/// A page of [`part_files`] (the master's `?parts`): the files named by part records among
/// the `n` records of the multipart family from `start` on, and the record to go on from
/// (None at the end).
pub fn part_files_page(
    index: &Index,
    start: &[u8],
    n: usize,
) -> Result<(Vec<String>, Option<Vec<u8>>), crate::index::Error> {
    let page = index.mp_scan(b"", start, n)?;
    let next = match page.last() {
        Some((k, _)) if page.len() == n => Some([k.as_slice(), &[0]].concat()),
        _ => None,
    };
    let is_part = |k: &[u8]| NAMING_FILES.iter().any(|p| k.starts_with(p));
    let files = page.into_iter().filter(|(k, _)| is_part(k)).filter_map(|(_, v)| Part::decode(&v)).map(|p| p.file);
    Ok((files.collect(), next))
}

/// How many parts of uploads in progress have a replica outside `volumes`: a part recorded
/// after the rebalance moved the parts, whose own move failed. Forgetting the volumes it is
/// on would lose it once they stop.
pub fn parts_outside(ctx: &Ctx, volumes: &[String]) -> Result<usize, store::Error> {
    let inside = |r: &String| volumes.iter().any(|v| v == crate::placement::server_of(r));
    let parts = scan_all(ctx, b"p/")?.into_iter().filter_map(|(_, v)| Part::decode(&v));
    Ok(parts.filter(|p| !p.replicas.iter().all(inside)).count())
}

/// Drops the volumes `gone` (forgotten once a rebalance took them out of the list) from the
/// notes of part files still to delete: those files leave with their volumes, and the sweep
/// would otherwise try them every second for good. How many parts' notes changed.
pub fn drop_volumes(ctx: &Ctx, gone: &[String]) -> Result<usize, store::Error> {
    let mut changed = 0;
    for (k, v) in scan_all(ctx, b"g/")? {
        let Some(mut p) = Part::decode(&v) else { continue };
        let before = p.replicas.len();
        p.replicas.retain(|r| !gone.iter().any(|g| g == crate::placement::server_of(r)));
        if p.replicas.len() == before {
            continue;
        }
        if p.replicas.is_empty() {
            ctx.shared.index.mp_delete(&[k])?;
        } else {
            ctx.shared.index.mp_put(&k, &p.encode())?;
        }
        changed += 1;
    }
    Ok(changed)
}

/// Every record of the multipart family under `prefix`, read a page at a time.
fn scan_all(ctx: &Ctx, prefix: &[u8]) -> Result<Vec<crate::index::Entry>, store::Error> {
    Ok(scan_index(&ctx.shared.index, prefix)?)
}

fn scan_index(index: &Index, prefix: &[u8]) -> Result<Vec<crate::index::Entry>, crate::index::Error> {
    let mut all = Vec::new();
    let mut start = prefix.to_vec();
    loop {
        let page = index.mp_scan(prefix, &start, PAGE)?;
        let Some((k, _)) = page.last() else { break };
        start = k.clone();
        start.push(0);
        let full = page.len() == PAGE;
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(all)
}

/// The upload `id` of `obj`, or `404 NoSuchUpload`.
fn upload(ctx: &Ctx, obj: &Object, id: &str) -> Result<Upload, Failure> {
    let v = ctx.shared.index.mp_get(&upload_key(id)).map_err(store::Error::from)?;
    match v.and_then(|v| Upload::decode(&v)) {
        Some(u) if u.key == obj.native_key() => Ok(u),
        _ => Err(S3Error::NoSuchUpload.into()),
    }
}

/// The parts of upload `id` recorded so far, in part-number order, from `after` on.
fn parts(ctx: &Ctx, id: &str, after: u32, n: usize) -> Result<Vec<(u32, Part)>, Failure> {
    let prefix = parts_prefix(id);
    let mut start = part_key(id, after);
    if after > 0 {
        start.push(0);
    }
    let found = ctx.shared.index.mp_scan(&prefix, &start, n).map_err(store::Error::from)?;
    Ok(numbered(&prefix, found))
}

/// Part records (under `prefix`, an upload's) as their part numbers and parts.
fn numbered(prefix: &[u8], found: Vec<crate::index::Entry>) -> Vec<(u32, Part)> {
    found
        .into_iter()
        .filter_map(|(k, v)| {
            let num = u32::from_be_bytes(k.get(prefix.len()..)?.try_into().ok()?);
            Some((num, Part::decode(&v)?))
        })
        .collect()
}

/// Claims a lock name, waiting a little for the holder to finish.
async fn claim<'a>(ctx: &'a Ctx, name: &[u8]) -> Result<store::KeyGuard<'a>, Failure> {
    claim_waiting(ctx, name, BUSY_WAIT).await
}

/// A new upload id: the time and a counter (fixed-width hex, so that ids sort as they were
/// made), then a hash that keeps ids of masters started at once apart. S3 lists the uploads
/// of one key by when they began and pages them by ids "lexicographically greater" than
/// the marker: with ids in that order, sorting and paging by id does both.
fn new_upload_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ms = now_ms();
    let mut h = crate::md5::Md5::new();
    h.update(&ms.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&n.to_le_bytes());
    let d = h.finalize();
    let mut id = format!("{:012x}{:08x}", ms & 0xffff_ffff_ffff, n as u32);
    id.extend(d[..8].iter().map(|b| format!("{b:02x}")));
    id
}

pub fn create(ctx: &Ctx, conn: &mut Conn, req: &Req, obj: &Object, meta: Metadata) -> Result<Answer, Failure> {
    let key = obj.native_key();
    write::check_key(&key)?;
    let id = new_upload_id();
    let stored = Stored { etag: None, headers: meta.headers }.encode();
    let u = Upload { key, created_ms: now_ms(), stored };
    ctx.shared.index.mp_put(&upload_key(&id), &u.encode()).map_err(store::Error::from)?;
    Ok(ok(conn, req, 200, Some(xml::initiate_multipart_upload(&obj.bucket, &obj.key, &id))))
}

/// Writes a part from `src` onto the key's replicas and records it, replacing an earlier
/// upload of the same part number. Returns its record.
async fn write_part<S: Source<Error = S3Error>>(
    ctx: &Ctx,
    u: &Upload,
    id: &str,
    n: u32,
    src: &mut S,
    expect_md5: Option<[u8; 16]>,
) -> Result<Part, Failed<S3Error>> {
    let (gen, topo) = ctx.topo_gen();
    let replicas = topo.place(&u.key);
    topo.all_up(&replicas).map_err(store::Error::Volume)?;
    let file = format!("{id}.{n}.{}", write::temp_id());
    let mut part = Part { size: 0, md5: [0; 16], crc32: None, mtime_ms: 0, file, replicas };
    let index = &ctx.shared.index;
    index.mp_put(&writing_key(&part), &part.encode()).map_err(store::Error::from)?;
    let mut src = Summed { src, crc: crc32fast::Hasher::new() };
    let to = targets(&part.replicas, &part.path());
    let sent = write::send_all(ctx, &topo, &to, &mut src, true, 0).await;
    let w = match sent.and_then(|w| Ok(write::as_expected(expect_md5, w)?)) {
        Ok(w) => w,
        Err(e) => {
            // what some replicas took: a part of no upload
            drop_written(ctx, &topo, &part).await;
            return Err(e);
        }
    };
    (part.size, part.md5, part.mtime_ms) = (w.size, w.md5.unwrap_or_default(), now_ms());
    part.crc32 = Some(src.crc.finalize());
    // Abort and Complete hold the upload's lock while they read its parts and forget them:
    // a part is recorded under that lock and only while the upload still exists, or its
    // files go (recorded after them, it would be a part of no upload, never deleted)
    let held = match hold_upload(ctx, id).await {
        Ok(held) => held,
        Err(e) => {
            drop_written(ctx, &topo, &part).await;
            return Err(e);
        }
    };
    let old = index.mp_get(&part_key(id, n)).map_err(store::Error::from)?.and_then(|v| Part::decode(&v));
    // the record and the end of the writing note at once: a crash between them would leave
    // the note, and the next start would delete the files of a recorded part
    let record = part.encode();
    index.mp_write(&[(&part_key(id, n), &record)], &[writing_key(&part)]).map_err(store::Error::from)?;
    drop(held);
    // -sync: a part acknowledged is on disk like a value
    ctx.durable().await?;
    if let Some(old) = old {
        delete_files(ctx, &topo, &old).await;
    }
    if ctx.topo_gen().0 != gen {
        // the volume list changed while the part was written (an online rebalance), which
        // may have moved the upload's parts before this one was recorded: it moves now, or
        // it would stay on volumes leaving the list
        match moves::relocate_held(ctx, id, n, &u.key, false).await {
            Ok(_) => return Ok(current_part(ctx, id, n)?.unwrap_or(part)),
            Err(e) => eprintln!(
                "mkv: S3 upload {id} part {n}: written during a volume change and not moved yet ({e}); \
                 a rerun of the rebalance moves it"
            ),
        }
    }
    Ok(part)
}

/// A part's bytes as they go by, summed for its record's CRC32.
struct Summed<'a, S> {
    src: &'a mut S,
    crc: crc32fast::Hasher,
}

impl<S: Source> Source for Summed<'_, S> {
    type Error = S::Error;

    async fn next(&mut self, max: usize) -> Result<Option<Bytes>, S::Error> {
        let piece = self.src.next(max).await?;
        if let Some(p) = &piece {
            self.crc.update(p);
        }
        Ok(piece)
    }

    fn len(&self) -> Option<u64> {
        self.src.len()
    }

    async fn end(&mut self) -> Result<(), S::Error> {
        self.src.end().await
    }
}

/// Part `n` of upload `id` as recorded now.
fn current_part(ctx: &Ctx, id: &str, n: u32) -> Result<Option<Part>, store::Error> {
    Ok(ctx.shared.index.mp_get(&part_key(id, n))?.and_then(|v| Part::decode(&v)))
}

#[allow(clippy::too_many_arguments)]
pub async fn upload_part(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    body: &mut Body,
    obj: &Object,
    id: &str,
    n: u32,
    verified: Verified,
) -> Result<Answer, Failure> {
    let u = upload(ctx, obj, id)?;
    let payload = Payload::new(&req.headers, verified, false)?;
    let _part = claim(ctx, &lock_name(id, Some(n))).await?;
    let mut src = S3Body::new(conn, body, payload);
    let r = write_part(ctx, &u, id, n, &mut src, None).await;
    let (broken, finished) = (src.broken, src.finished.take());
    let part = r.map_err(|e| write_failure(e, broken))?;
    start(conn, 200, &req.request_id);
    let tag = format!("\"{}\"", part.etag());
    response::header(&mut conn.out, "ETag", &[tag.as_bytes()]);
    if let Some(sum) = finished.and_then(|f| f.checksum) {
        response::header(&mut conn.out, sum.algorithm().header(), &[sum.to_base64().as_bytes()]);
    }
    Ok(Answer { reply: Reply::Body(Vec::new()), close: false })
}

/// UploadPartCopy: the source's bytes (or a range of them) streamed from one of its replicas
/// into the part's. A whole source whose bytes are not its value (a replica's rot, found by
/// its record's MD5) is refused before the part is recorded and read again from the next
/// replica. A range cannot be checked so: its bytes are copied as read.
#[allow(clippy::too_many_arguments)]
pub async fn upload_part_copy(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    obj: &Object,
    id: &str,
    n: u32,
    source: &Object,
    range: Option<(u64, u64)>,
    conditions: &Conditions,
) -> Result<Answer, Failure> {
    let u = upload(ctx, obj, id)?;
    let source_key = source.native_key();
    let mut first = Some(open_source(ctx, source, range, conditions).await?);
    let _part = claim(ctx, &lock_name(id, Some(n))).await?;
    let work = async {
        let mut tries = 0;
        loop {
            let opened = match first.take() {
                Some(o) => o,
                None => open_source(ctx, source, range, conditions).await?,
            };
            let read::Opened { rec, body } = opened;
            let wanted = range.unwrap_or((0, rec.size.saturating_sub(1)));
            let whole = wanted == (0, rec.size.saturating_sub(1));
            let resume = read::Resume::new(ctx, &source_key, &rec, wanted);
            let mut src = Checked(Reader::new(&ctx.client, body).resuming(resume));
            match write_part(ctx, &u, id, n, &mut src, rec.md5.filter(|_| whole)).await {
                Err(Failed::Store(store::Error::Damaged)) if tries + 1 < rec.volumes.len() => {
                    tries += 1;
                    eprintln!(
                        "mkv: S3 part copy from {}: a replica read does not hold its value (its MD5 differs); \
                         copying from the next (`mkv verify -deep -repair` mends it)",
                        source_key.escape_ascii()
                    );
                }
                Err(e) => return Err(write_failure(e, false)),
                Ok(part) => return Ok(xml::copy_part_result(&part.etag(), part.mtime_ms as i64)),
            }
        }
    };
    patiently(ctx, conn, req, work).await
}

/// Opens a part copy's source, its preconditions and range checked.
async fn open_source(
    ctx: &Ctx,
    source: &Object,
    range: Option<(u64, u64)>,
    conditions: &Conditions,
) -> Result<read::Opened, Failure> {
    read::open(ctx, &source.native_key(), |rec| -> Result<_, Failure> {
        let stored = Stored::decode(&rec.meta);
        conditions.check(&etag(rec, &stored), (rec.mtime / 1000) as i64, false)?;
        match range {
            // S3's answer here, not a GET's 416
            Some((_, b)) if b >= rec.size => {
                Err(S3Error::InvalidArgument("The x-amz-copy-source-range is not within the source object's size")
                    .into())
            }
            r => Ok(r),
        }
    })
    .await
    .map_err(|e| match e.error {
        S3Error::NoSuchKey => super::object::missing(ctx, source),
        _ => e,
    })
}

/// A replica read whose failures read as S3's.
struct Checked<'a>(Reader<'a>);

impl Source for Checked<'_> {
    type Error = S3Error;

    async fn next(&mut self, max: usize) -> Result<Option<Bytes>, S3Error> {
        self.0.next(max).await.map_err(|_| S3Error::InternalError("reading the copy source failed"))
    }

    fn len(&self) -> Option<u64> {
        self.0.len()
    }
}

/// Upload `id`'s lock, held, while the upload exists (`404 NoSuchUpload` once it ended).
async fn hold_upload<'a>(ctx: &'a Ctx, id: &str) -> Result<store::KeyGuard<'a>, Failed<S3Error>> {
    let held = claim(ctx, &lock_name(id, None)).await.map_err(|f| Failed::Source(f.error))?;
    match ctx.shared.index.mp_get(&upload_key(id)).map_err(store::Error::from)? {
        Some(_) => Ok(held),
        None => Err(Failed::Source(S3Error::NoSuchUpload)),
    }
}

/// Every part of upload `id`.
fn all_parts(ctx: &Ctx, id: &str) -> Result<Vec<(u32, Part)>, store::Error> {
    let prefix = parts_prefix(id);
    Ok(numbered(&prefix, scan_all(ctx, &prefix)?))
}

/// Deletes the part files of an upload, then its records (files that could not be deleted
/// are left to [`sweep`]).
async fn forget(ctx: &Ctx, id: &str, parts: Vec<(u32, Part)>) {
    let topo = ctx.topo();
    let mut files = Vec::new();
    for (_, p) in &parts {
        files.extend(targets(&p.replicas, &p.path()));
    }
    if let Err(e) = ctx.client.delete_all(&topo, &files).await {
        // kept under `g/` (no listing shows them, no upload owns them) until the server's
        // sweep deletes them: forgotten, they would stay on the volumes for good
        parts.iter().for_each(|(_, p)| leave_for_sweep(ctx, p, &e));
    }
    let mut keys: Vec<Vec<u8>> = parts.iter().map(|(n, _)| part_key(id, *n)).collect();
    keys.push(upload_key(id));
    keys.push(completing_key(id));
    if let Err(e) = ctx.shared.index.mp_delete(&keys) {
        eprintln!("mkv: S3 upload {id}: could not forget its records: {e}");
    }
}

/// AbortMultipartUpload. An upload a Complete ended while the Abort waited for its lock
/// is no upload to abort: `NoSuchUpload`, as S3 answers, not a `204` that says the upload
/// is gone unwritten.
pub async fn abort(ctx: &Ctx, conn: &mut Conn, req: &Req<'_>, obj: &Object, id: &str) -> Result<Answer, Failure> {
    upload(ctx, obj, id)?;
    if !drop_upload(ctx, id).await? {
        return Err(S3Error::NoSuchUpload.into());
    }
    Ok(ok(conn, req, 204, None))
}

/// Deletes upload `id`'s part files and records, under its lock (Abort, DeleteBucket).
/// False when the upload was gone once the lock was had (a Complete that held it ended it).
async fn drop_upload(ctx: &Ctx, id: &str) -> Result<bool, Failure> {
    let _upload = claim(ctx, &lock_name(id, None)).await?;
    if ctx.shared.index.mp_get(&upload_key(id)).map_err(store::Error::from)?.is_none() {
        return Ok(false);
    }
    let have = all_parts(ctx, id)?;
    forget(ctx, id, have).await;
    Ok(true)
}

/// Every upload in progress into `bucket`: (key within the bucket, upload id, time).
fn uploads_of(ctx: &Ctx, bucket: &str) -> Result<Vec<(Vec<u8>, String, u64)>, Failure> {
    let base = format!("/{bucket}/").into_bytes();
    let mut all = Vec::new();
    for (k, v) in scan_all(ctx, b"u/")? {
        let Some(u) = Upload::decode(&v) else { continue };
        let Some(key) = u.key.strip_prefix(base.as_slice()) else { continue };
        all.push((key.to_vec(), String::from_utf8_lossy(&k[2..]).into_owned(), u.created_ms));
    }
    Ok(all)
}

/// Aborts every upload in progress into `bucket`: DeleteBucket takes them with it, as S3
/// does (they would otherwise outlive their bucket, listed and holding part files).
pub async fn abort_all(ctx: &Ctx, bucket: &str) -> Result<(), Failure> {
    for (_, id, _) in uploads_of(ctx, bucket)? {
        drop_upload(ctx, &id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(file: &str) -> Vec<u8> {
        Part { size: 1, md5: [0; 16], crc32: None, mtime_ms: 2, file: file.into(), replicas: vec!["v:1".into()] }
            .encode()
    }

    /// The part files verify spares are those of part records and of ended uploads' parts
    /// still to delete, every page of them, and no other record's.
    #[test]
    fn part_files_are_those_records_name_page_by_page() {
        let dir = std::env::temp_dir().join(format!("mkv-mp-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let index = Index::open(&dir).unwrap();
        let upload = Upload { key: b"/b/k".to_vec(), created_ms: 1, stored: Vec::new() };
        index.mp_put(&upload_key("up"), &upload.encode()).unwrap();
        index.mp_put(&part_key("up", 1), &part("up.1.x")).unwrap();
        index.mp_put(&part_key("up", 2), &part("up.2.x")).unwrap();
        index.mp_put(b"g/old.1.y", &part("old.1.y")).unwrap();
        index.mp_put(b"w/up.3.z", &part("up.3.z")).unwrap();
        index.mp_put(&done_key("done"), &encode_done(b"/b/d", "abc-2")).unwrap();
        index.mp_put(&completing_key("up"), &encode_done(b"/b/k", "def-2")).unwrap();
        let want: std::collections::HashSet<String> =
            ["up.1.x", "up.2.x", "old.1.y", "up.3.z"].map(String::from).into();
        assert_eq!(part_files(&index).unwrap(), want);
        let (mut paged, mut start, mut pages) = (std::collections::HashSet::new(), Vec::new(), 0);
        loop {
            let (files, next) = part_files_page(&index, &start, 2).unwrap();
            paged.extend(files);
            pages += 1;
            match next {
                Some(n) => start = n,
                None => break,
            }
        }
        // 7 records, 2 a page
        assert_eq!((paged, pages), (want.clone(), 4));
        // at start, a part being written (a crash cut it) becomes one whose files the sweep deletes
        assert_eq!(adopt_cut_parts(&index).unwrap(), 1);
        assert_eq!(part_files(&index).unwrap(), want);
        assert!(index.mp_get(b"w/up.3.z").unwrap().is_none());
        assert!(index.mp_get(b"g/up.3.z").unwrap().is_some());
        drop(index);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A part's record keeps its CRC32 (version 2); one written before it was kept (version
    /// 1, an upload in progress across an upgrade) still reads, checked by its MD5.
    #[test]
    fn part_records_round_trip_with_and_without_their_crc() {
        let p = Part {
            size: 8 << 20,
            md5: [7; 16],
            crc32: Some(0xdead_beef),
            mtime_ms: 1_700_000_000_000,
            file: "up.1.x".into(),
            replicas: vec!["v:1".into(), "w:2/sv01".into()],
        };
        let v2 = p.encode();
        assert_eq!(v2[0], 2);
        assert!(Part::decode(&v2) == Some(p.clone()));
        assert!(Part::decode(&v2[..v2.len() - 1]).is_none(), "a cut CRC read as a part");
        let old = Part { crc32: None, ..p };
        let v1 = old.encode();
        assert_eq!((v1[0], v1.len()), (1, v2.len() - 4));
        assert!(Part::decode(&v1) == Some(old));
        assert!(Part::decode(&[3]).is_none());
    }

    #[test]
    fn a_completes_note_round_trips() {
        let v = encode_done(b"/b/k", "0123-3");
        let (ms, tag, key) = decode_done(&v).unwrap();
        assert!(ms > 0 && ms <= now_ms());
        assert_eq!((tag, key), ("0123-3", &b"/b/k"[..]));
        assert!(decode_done(&v[..5]).is_none());
    }
}
