//! CompleteMultipartUpload: the parts chosen, read in order from their replicas (each
//! checked against its record's sum) into the key's replicas, then the upload ended; and
//! the markers that let a Complete cut short by a crash be finished or answered again.

use super::*;

/// How a part read for a Complete is checked: by the CRC32 its record keeps, or by its MD5
/// (its record is older than the CRC).
pub(super) enum PartSum {
    Crc(crc32fast::Hasher),
    Md5(crate::md5::Md5),
}

/// The parts of an upload read one after another from their replicas: the completed
/// object's source.
pub(super) struct Parts<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) parts: Vec<Part>,
    pub(super) next: usize,
    pub(super) d: Option<Download>,
    pub(super) total: u64,
    /// The checksums the Complete asked for, checked as the bytes go by; the first that
    /// failed, refused at the end (see [`Source::end`]): the body may have gone out whole.
    pub(super) sums: sums::Sums,
    pub(super) failed: Option<S3Error>,
    /// The sum of the part being streamed: a replica whose bytes are not the part's (one
    /// disk's rot, same size) fails the Complete rather than become the object.
    pub(super) sum: Option<PartSum>,
    /// Where each part's replicas are first tried, so that a Complete sent again after one
    /// met a bad replica starts elsewhere.
    pub(super) first: usize,
}

impl Parts<'_> {
    /// Notes a checksum that failed: the first is the answer (at the end).
    fn check(&mut self, r: Result<(), S3Error>) {
        if let Err(e) = r {
            self.failed.get_or_insert(e);
        }
    }

    /// Opens part `i` on the first replica that answers. A part every replica of which
    /// answered that it has no such file (a snapshot restored, a volume emptied) will not
    /// come back by retrying: `InvalidPart`, final; anything else may pass: `503`.
    async fn open(&self, i: usize) -> Result<Download, S3Error> {
        let p = &self.parts[i];
        let topo = self.ctx.topo();
        let mut gone = 0;
        let n = p.replicas.len();
        // a record naming no replica (a damaged index) tries none: InvalidPart below
        let turn = (0..n).map(|k| &p.replicas[(self.first + k) % n]);
        for r in turn.filter(|r| topo.is_up(r)) {
            let (server, path) = crate::placement::replica_target(r, &p.path());
            match self.ctx.client.download(&topo, &server, &path).await {
                Ok(d) if d.status == 200 && d.length == Some(p.size) => return Ok(d),
                Ok(d) if d.status == 404 => gone += 1,
                _ => continue,
            }
        }
        if gone == p.replicas.len() {
            return Err(S3Error::InvalidPart);
        }
        Err(S3Error::ServiceUnavailable("no replica of a part is readable now"))
    }
}

impl Source for Parts<'_> {
    type Error = S3Error;

    async fn next(&mut self, max: usize) -> Result<Option<Bytes>, S3Error> {
        loop {
            if self.d.is_none() {
                if self.next == self.parts.len() {
                    let r = self.sums.finish();
                    self.check(r);
                    return Ok(None);
                }
                self.sums.start(self.next);
                if self.parts[self.next].size == 0 {
                    let r = self.sums.end();
                    self.check(r);
                    self.next += 1;
                    continue;
                }
                self.d = Some(self.open(self.next).await?);
                self.sum = Some(match self.parts[self.next].crc32 {
                    Some(_) => PartSum::Crc(crc32fast::Hasher::new()),
                    None => PartSum::Md5(crate::md5::Md5::new()),
                });
                self.next += 1;
            }
            let Some(d) = self.d.as_mut() else { continue };
            match self.ctx.client.next_chunk(d, max).await {
                Ok(Some(c)) => {
                    self.sums.update(&c);
                    if let Some(PartSum::Crc(h)) = self.sum.as_mut() {
                        h.update(&c);
                    } else if let Some(PartSum::Md5(mut md5)) = self.sum.take() {
                        // hashed off the event loop, as a PUT's MD5 is
                        let piece = c.clone();
                        let hashed = write::on_pool(move || {
                            md5.update(&piece);
                            md5
                        })
                        .await;
                        let md5 = hashed.map_err(|_| S3Error::InternalError("hashing a part failed"))?;
                        self.sum = Some(PartSum::Md5(md5));
                    }
                    return Ok(Some(c));
                }
                Ok(None) => {
                    let r = self.sums.end();
                    self.check(r);
                    let part = &self.parts[self.next - 1];
                    let holds = match self.sum.take() {
                        Some(PartSum::Crc(h)) => part.crc32 == Some(h.finalize()),
                        Some(PartSum::Md5(m)) => m.finalize() == part.md5,
                        None => true,
                    };
                    if !holds {
                        eprintln!(
                            "mkv: S3 part {} read for a Complete does not hold the part's bytes: the Complete fails; \
                             mkv verify -deep -repair restores it",
                            part.file
                        );
                        self.check(Err(S3Error::InternalError("a replica of a part does not hold the part's bytes")));
                    }
                    if let Some(d) = self.d.take() {
                        self.ctx.client.finish(d);
                    }
                }
                Err(_) => return Err(S3Error::ServiceUnavailable("a part's replica failed while it was read")),
            }
        }
    }

    fn len(&self) -> Option<u64> {
        Some(self.total)
    }

    async fn end(&mut self) -> Result<(), S3Error> {
        self.failed.take().map_or(Ok(()), Err)
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn complete(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &Req<'_>,
    body: &mut Body,
    obj: &Object,
    id: &str,
    write_if: &Conditions,
    verified: Verified,
) -> Result<Answer, Failure> {
    let what = "an aws-chunked CompleteMultipartUpload body";
    let doc = checked_body(conn, req, body, verified, xml::MAX_XML_BODY, false, what).await?;
    let asked = xml::parse_complete(&doc)?;
    if asked.is_empty() {
        return Err(S3Error::MalformedXML.into());
    }
    let location = object_url(req, obj);
    let answer = |tag: &str| xml::complete_multipart_upload(&location, &obj.bucket, &obj.key, tag);
    // all of it answered patiently: a Complete sent again while the first runs (its client
    // gave up waiting) waits here for it, kept alive, and then answers as it did
    let work = async {
        let _upload = claim_waiting(ctx, &lock_name(id, None), COMPLETE_WAIT).await?;
        let u = match upload(ctx, obj, id) {
            Ok(u) => u,
            Err(f) => {
                return match completed_before(ctx, obj, id, &asked)? {
                    Some(tag) => Ok(answer(&tag)),
                    None => Err(f),
                }
            }
        };
        let have = all_parts(ctx, id)?;
        let chosen = choose(&have, &asked)?;
        let sums = sums::Sums::new(&req.headers, asked.iter().map(|l| l.checksum).collect())?;
        let tag = multipart_etag(&chosen.iter().map(|p| p.md5).collect::<Vec<_>>());
        let mut stored = Stored::decode(&u.stored);
        stored.etag = Some(tag.clone());
        let total: u64 = chosen.iter().map(|p| p.size).sum();
        // the size the client says it uploaded (boto3's MpuObjectSize): a check it asked for
        if let Some(said) = req.headers.get("x-amz-mp-object-size") {
            let said = std::str::from_utf8(said.trim_ascii()).ok().and_then(|s| s.parse::<u64>().ok());
            if said != Some(total) {
                return Err(S3Error::InvalidRequest(
                    "The provided 'x-amz-mp-object-size' header value does not match the size of the object \
                     the parts make",
                )
                .into());
            }
        }
        // the ETag comes from the parts' MD5s: the whole object's is hashed (a second pass
        // over every byte) only for the record, as a native PUT's, under -md5sum
        let md5 = ctx.shared.cfg.md5sum;
        let opts = PutOpts { replace_live: true, allow_empty: true, md5, meta: stored.encode(), expect_md5: None };
        let first = crate::record::now_ms() as usize;
        let mut src = Parts { ctx, parts: chosen, next: 0, d: None, total, sums, failed: None, sum: None, first };
        // refused, the upload stays: the client may complete it again or abort it
        let held = claim_for_write(ctx, &u.key, write_if, false).await?;
        // kept if the write fails or a crash cuts it: a write recovery rolls forward ends
        // the upload all the same ([`settle_completes`])
        let marker = completing_key(id);
        ctx.shared.index.mp_put(&marker, &encode_done(&u.key, &tag)).map_err(store::Error::from)?;
        write::put_claimed(ctx, held, &u.key, &mut src, &opts).await.map_err(|e| write_failure(e, false))?;
        // the object is in place: what a Complete sent again will answer, then the parts
        // (listed or not), the upload and the marker go
        note_completed(ctx, id, &u.key, &tag);
        forget(ctx, id, have).await;
        Ok(answer(&tag))
    };
    patiently(ctx, conn, req, work).await
}

/// The object's URL as the client reached it (S3's `Location` is absolute): the `Host` it
/// sent, `https` when a proxy in front says the client used it, the path-style object path.
pub(super) fn object_url(req: &Req<'_>, obj: &Object) -> String {
    let host = req.headers.get("host").and_then(|h| std::str::from_utf8(h.trim_ascii()).ok()).unwrap_or("localhost");
    let https = req.headers.get("x-forwarded-proto").is_some_and(|p| p.trim_ascii().eq_ignore_ascii_case(b"https"));
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}/{}/{}", obj.bucket, super::xml::url_encode(&obj.key))
}

/// How long a Complete waits for another Complete of its upload to end (it is kept alive
/// meanwhile, see [`patiently`]); then `503 SlowDown`.
pub(super) const COMPLETE_WAIT: Duration = Duration::from_secs(15 * 60);

/// How long a completed upload is remembered for a Complete sent again.
pub(super) const DONE_KEEP: Duration = Duration::from_secs(60 * 60);

/// The record of a completed upload `id`: when, its key, the object's ETag.
pub(super) fn done_key(id: &str) -> Vec<u8> {
    format!("d/{id}").into_bytes()
}

/// The record of a Complete of upload `id` under way (or cut short by a crash or a failed
/// write), in the completed record's encoding: when it began, its key, the ETag it writes.
pub(super) fn completing_key(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

/// Now, the ETag and the key, as a completed upload's (or a Complete's) record holds them.
pub(super) fn encode_done(key: &[u8], tag: &str) -> Vec<u8> {
    let mut v = now_ms().to_le_bytes().to_vec();
    v.push(tag.len().min(255) as u8);
    v.extend_from_slice(&tag.as_bytes()[..tag.len().min(255)]);
    v.extend_from_slice(key);
    v
}

pub(super) fn note_completed(ctx: &Ctx, id: &str, key: &[u8], tag: &str) {
    if let Err(e) = ctx.shared.index.mp_put(&done_key(id), &encode_done(key, tag)) {
        eprintln!("mkv: S3 upload {id}: completed, but not noted for a Complete sent again: {e}");
    }
}

/// (when, ETag, key) of a completed upload's record (or a Complete's).
pub(super) fn decode_done(v: &[u8]) -> Option<(u64, &str, &[u8])> {
    let ms = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let n = *v.get(8)? as usize;
    let tag = std::str::from_utf8(v.get(9..9 + n)?).ok()?;
    Some((ms, tag, &v[9 + n..]))
}

/// The ETag of `obj` when upload `id` completed into it with the parts `asked` (a Complete
/// sent again, after the first ended): its answer again.
pub(super) fn completed_before(
    ctx: &Ctx,
    obj: &Object,
    id: &str,
    asked: &[xml::Listed],
) -> Result<Option<String>, Failure> {
    let Some(v) = ctx.shared.index.mp_get(&done_key(id)).map_err(store::Error::from)? else { return Ok(None) };
    let Some((_, tag, key)) = decode_done(&v) else { return Ok(None) };
    let md5s: Option<Vec<[u8; 16]>> = asked.iter().map(|l| crate::md5::from_hex(l.etag.trim_matches('"'))).collect();
    let same_parts = md5s.is_some_and(|m| multipart_etag(&m) == tag);
    Ok((key == obj.native_key() && same_parts).then(|| tag.to_string()))
}

/// Forgets completed uploads older than [`DONE_KEEP`] (at most once a minute: the sweep
/// runs every second).
pub(super) fn expire_completed(ctx: &Ctx) -> Result<(), store::Error> {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    if LAST.get().is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
        return Ok(());
    }
    LAST.set(Some(std::time::Instant::now()));
    let before = now_ms().saturating_sub(DONE_KEEP.as_millis() as u64);
    let old: Vec<Vec<u8>> = scan_all(ctx, b"d/")?
        .into_iter()
        .filter(|(_, v)| decode_done(v).is_none_or(|(ms, _, _)| ms < before))
        .map(|(k, _)| k)
        .collect();
    if !old.is_empty() {
        ctx.shared.index.mp_delete(&old)?;
    }
    Ok(())
}

/// Settles the Completes a crash (or a failed write) left noted: once no write of the key is
/// pending any more, an object that holds the Complete's value (its ETag, written since the
/// Complete began) means the Complete landed, and its upload ends as the Complete would have
/// ended it; any other value means it did not, and the upload stays to be completed again.
/// Uploads a Complete is running for now are left to it.
pub(super) async fn settle_completes(ctx: &Ctx) -> Result<(), store::Error> {
    for (marker, v) in scan_all(ctx, b"c/")? {
        let Some(id) = marker.get(2..).and_then(|id| std::str::from_utf8(id).ok()) else { continue };
        let Ok(_upload) = ctx.claim(&lock_name(id, None)) else { continue };
        let landed = match decode_done(&v) {
            Some((since, tag, key)) => {
                if ctx.shared.index.pending(key)?.is_some() {
                    // recovery rolls it back or forward first
                    continue;
                }
                holds(ctx, key, tag, since)?.then(|| (tag.to_string(), key.to_vec()))
            }
            None => None,
        };
        let upload = ctx.shared.index.mp_get(&upload_key(id))?;
        match landed {
            Some((tag, key)) if upload.is_some() => {
                eprintln!("mkv: S3 upload {id}: its Complete was cut short after the object was written; ending it");
                note_completed(ctx, id, &key, &tag);
                let have = all_parts(ctx, id)?;
                forget(ctx, id, have).await;
            }
            _ => ctx.shared.index.mp_delete(&[marker])?,
        }
    }
    Ok(())
}

/// Whether `key`'s live value is the one a Complete writing ETag `tag` since `since` wrote.
pub(super) fn holds(ctx: &Ctx, key: &[u8], tag: &str, since: u64) -> Result<bool, store::Error> {
    Ok(match ctx.shared.index.get(key)? {
        Some((crate::index::State::Live, rec)) => rec.mtime >= since && etag(&rec, &Stored::decode(&rec.meta)) == tag,
        _ => false,
    })
}

/// The parts a Complete names, checked against those uploaded: in ascending order
/// (`InvalidPartOrder`), each there with the ETag given (`InvalidPart`), all but the last
/// at least [`MIN_PART`] (`EntityTooSmall`).
pub(super) fn choose(have: &[(u32, Part)], asked: &[xml::Listed]) -> Result<Vec<Part>, Failure> {
    let mut chosen = Vec::with_capacity(asked.len());
    let mut last = 0;
    for (i, l) in asked.iter().enumerate() {
        if l.number <= last {
            return Err(S3Error::InvalidPartOrder.into());
        }
        last = l.number;
        let Some((_, p)) = have.iter().find(|(k, _)| *k == l.number) else { return Err(S3Error::InvalidPart.into()) };
        if l.etag.trim_matches('"') != p.etag() {
            return Err(S3Error::InvalidPart.into());
        }
        if i + 1 < asked.len() && p.size < MIN_PART {
            return Err(S3Error::EntityTooSmall.into());
        }
        chosen.push(Part { file: p.file.clone(), replicas: p.replicas.clone(), ..*p });
    }
    Ok(chosen)
}
