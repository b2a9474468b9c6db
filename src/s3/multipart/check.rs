//! The parts of uploads in progress checked, and with `repair` made whole again: what
//! `mkv verify` (offline, the master's scrub, or the master's for `-online`) does for them
//! after the keys. A part's record names its replicas as a key's does; a replica whose file
//! is gone, of another size, or (`deep`) of other bytes than the part's MD5 leaves the
//! upload one disk from losing the part, and is copied again from one that verifies
//! ([`restore_file`]: a corrupt source never spreads).
//!
//! A repair holds the part's lock (no upload of the same part number meanwhile); a
//! Complete or an Abort that ended the upload while a copy was made took the part's files
//! with it, and the copy goes too.

use serde::{Deserialize, Serialize};

use super::{current_part, lock_name, numbered, parts_prefix, scan_all, upload_key, Part, Upload};
use crate::{
    placement::replica_target,
    store::{
        self,
        repair::{digest_of, restore_file, FileValue, Pace},
        Ctx,
    },
};

/// How long a part's lock is waited for (an upload of it, a Complete) before the part is
/// reported busy and left for the next run.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What is wrong with one replica of a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Damage {
    /// Its file is not there.
    Missing,
    /// Its file has another size than the part.
    Size,
    /// `deep`: its bytes do not have the part's MD5.
    Corrupt,
}

/// One damaged replica of a part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// `S3 upload <id> part <n>`.
    pub part: String,
    pub replica: String,
    pub damage: Damage,
    /// Copied again (with `repair`).
    pub repaired: bool,
}

/// What a check of every part came to.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PartsChecked {
    /// Parts looked at.
    pub parts: u64,
    pub found: Vec<Found>,
    /// Parts that could not be checked or repaired, each `<part>: <why>`.
    pub failed: Vec<String>,
}

/// How a check of the parts reads them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOpts {
    /// Read every replica whole and check its MD5 (else a HEAD: there, of the right size).
    pub deep: bool,
    /// Copy the damaged replicas again.
    pub repair: bool,
    /// Deep reads average at most this many MiB/s (0: no limit), as verify's `-rate`.
    pub rate: f64,
}

/// Checks (`deep`: reads) every replica of every part of every upload in progress and,
/// with `repair`, copies the damaged ones again. Fails only when the index cannot be read.
pub async fn check_parts(ctx: &Ctx, opts: CheckOpts) -> Result<PartsChecked, store::Error> {
    let mut done = PartsChecked::default();
    let mut pace = if opts.deep { Pace::new(opts.rate) } else { None };
    for (k, v) in scan_all(ctx, b"u/")? {
        let Some(id) = k.strip_prefix(b"u/").and_then(|id| std::str::from_utf8(id).ok()) else { continue };
        if Upload::decode(&v).is_none() {
            continue;
        }
        for (number, _) in numbered(&parts_prefix(id), scan_all(ctx, &parts_prefix(id))?) {
            let name = super::PartName { upload: id, number }.to_string();
            done.parts += 1;
            match check_part(ctx, id, number, opts.deep, opts.repair, pace.as_mut()).await {
                Ok(Judged { bad, failed }) => {
                    done.found.extend(bad.into_iter().map(|(replica, damage, repaired)| Found {
                        part: name.clone(),
                        replica,
                        damage,
                        repaired,
                    }));
                    done.failed.extend(failed.into_iter().map(|why| format!("{name}: {why}")));
                }
                Err(e) => done.failed.push(format!("{name}: {e}")),
            }
        }
    }
    Ok(done)
}

/// Part `n` of upload `id`: its damaged replicas, each with whether it was repaired. They
/// are judged without the part's lock (a deep read of a 5 GiB part would keep a retry of
/// its upload waiting for minutes), then judged again only if the part is still the one
/// read: a part uploaded again, or an upload that ended meanwhile, had its files deleted.
async fn check_part(
    ctx: &Ctx,
    id: &str,
    n: u32,
    deep: bool,
    repair: bool,
    mut pace: Option<&mut Pace>,
) -> Result<Judged, store::Error> {
    let Some(p) = current_part(ctx, id, n)? else { return Ok(Judged::default()) };
    let topo = ctx.topo();
    let (mut good, mut bad, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for r in &p.replicas {
        if !topo.is_up(r) {
            // cannot be asked: not vouched for either (a verify says so and fails)
            failed.push(format!("{r} not checked: its volume is down"));
            continue;
        }
        match damage_of(ctx, &topo, &p, r, deep, pace.as_deref_mut()).await? {
            None => good.push(r.clone()),
            Some(d) => bad.push((r.clone(), d)),
        }
    }
    if bad.is_empty() || ended(ctx, id, n, &p)? {
        return Ok(Judged { bad: Vec::new(), failed });
    }
    let not_repaired = |bad: Vec<(String, Damage)>| bad.into_iter().map(|(r, d)| (r, d, false)).collect();
    if !repair {
        return Ok(Judged { bad: not_repaired(bad), failed });
    }
    let _part = ctx.claim_within(&lock_name(id, Some(n)), LOCK_WAIT).await?;
    if ended(ctx, id, n, &p)? {
        return Ok(Judged::default());
    }
    let to: Vec<String> = bad.iter().map(|(r, _)| r.clone()).collect();
    let value = FileValue { size: p.size, md5: p.md5, mtime_ms: p.mtime_ms };
    let restored = match restore_file(ctx, &topo, &p.path(), value, good, to).await {
        Ok(restored) => restored,
        // found all the same, and left as it is: counted damage, not only a failure
        Err(store::Error::NoGoodReplica) => {
            failed.push("no replica holds the part's bytes (size and MD5): left as it is".to_string());
            return Ok(Judged { bad: not_repaired(bad), failed });
        }
        Err(e) => {
            failed.push(format!("not repaired: {e}"));
            return Ok(Judged { bad: not_repaired(bad), failed });
        }
    };
    // a source found not to verify was restored too: damaged as well
    for r in &restored {
        if !bad.iter().any(|(b, _)| b == r) {
            bad.push((r.clone(), Damage::Corrupt));
        }
    }
    // Complete and Abort delete a part's files under the upload's lock: looked at under it,
    // an upload still there deletes the copies with the rest when it ends
    let _upload = ctx.claim_within(&lock_name(id, None), LOCK_WAIT).await?;
    if ended(ctx, id, n, &p)? {
        // the upload's files went with it while the copies were made, but for the copies
        let copies = Part { replicas: restored, ..p };
        super::delete_files(ctx, &topo, &copies).await;
        return Ok(Judged::default());
    }
    Ok(Judged { bad: bad.into_iter().map(|(r, d)| (r, d, true)).collect(), failed })
}

/// What [`check_part`] found: each damaged replica with whether it was repaired, and what
/// could not be done (replicas not checked, a repair that failed).
#[derive(Default)]
struct Judged {
    bad: Vec<(String, Damage, bool)>,
    failed: Vec<String>,
}

/// Whether part `n` of upload `id` is no longer `p`: the upload completed or aborted, or
/// the part was uploaded again.
fn ended(ctx: &Ctx, id: &str, n: u32, p: &Part) -> Result<bool, store::Error> {
    let upload_gone = ctx.shared.index.mp_get(&upload_key(id))?.is_none();
    Ok(upload_gone || current_part(ctx, id, n)?.as_ref() != Some(p))
}

/// What is wrong with replica `r` of part `p`: a HEAD, or (`deep`) its bytes read whole.
async fn damage_of(
    ctx: &Ctx,
    topo: &crate::volume::Topology,
    p: &Part,
    r: &str,
    deep: bool,
    pace: Option<&mut Pace>,
) -> Result<Option<Damage>, store::Error> {
    let path = p.path();
    let (size, md5) = if deep {
        match digest_of(ctx, topo, r, &path, pace).await? {
            None => return Ok(Some(Damage::Missing)),
            Some((size, md5)) => (size, Some(md5)),
        }
    } else {
        let (server, fpath) = replica_target(r, &path);
        match ctx.client.stat(topo, &server, &fpath).await? {
            None => return Ok(Some(Damage::Missing)),
            Some(size) => (size, None),
        }
    };
    Ok(if size != p.size {
        Some(Damage::Size)
    } else if md5.is_some_and(|m| m != p.md5) {
        Some(Damage::Corrupt)
    } else {
        None
    })
}
