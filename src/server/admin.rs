//! The admin port (`-admin`): `/metrics`, `/health`, the status page, and the admin methods,
//! which the API port also takes from this host or with the `-admin-token` bearer token.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{conn::Req, handlers::empty, ApiError, Local, Reply};
use crate::{
    admin::{self, Snapshot, VolumeState},
    http::{response, Conn, Method},
    metrics::{Totals, METHODS},
    s3::multipart::{self, PartMove},
    store::{repair, write::on_pool, Ctx, Refused},
};

/// How far back the status page's request rates look.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Whether the request may use an admin method: with `-admin-token`, it must carry
/// `Authorization: Bearer <token>` (401 otherwise); without, it must come from this host
/// (403 otherwise).
/// The token of an `Authorization: Bearer <token>` value (the scheme's case does not
/// matter, RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    value[..space].eq_ignore_ascii_case(b"bearer").then(|| value[space..].trim_ascii())
}

pub fn authorize(ctx: &Ctx, req: &Req) -> Result<(), ApiError> {
    match &ctx.shared.cfg.admin_token {
        Some(token) => {
            let sent = req.auth.as_deref().and_then(bearer);
            match sent {
                Some(t) if same(t, token.as_bytes()) => Ok(()),
                _ => Err(ApiError::Unauthorized),
            }
        }
        None if req.loopback => Ok(()),
        None => Err(ApiError::Forbidden),
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the admin port takes: its pages, and the admin methods (a `405`'s `Allow`).
const ADMIN_METHODS: &str = "GET, HEAD, VOLUMES, REPAIR, SNAPSHOT";

/// Routes a request on the admin port.
pub async fn handle(local: &Local, conn: &mut Conn, req: &mut Req) -> Result<Reply, ApiError> {
    let read = matches!(req.method, Some(Method::Get | Method::Head));
    match (req.method, &req.key[..]) {
        (Some(Method::Volumes | Method::Repair | Method::Snapshot), _) => method(local, conn, req).await,
        (_, b"/metrics") if read => {
            let text = admin::prometheus(&snapshot(local));
            response::start(&mut conn.out, 200);
            response::header(&mut conn.out, "Content-Type", &[b"text/plain; version=0.0.4; charset=utf-8"]);
            Ok(Reply::Body(text.into_bytes()))
        }
        (_, b"/health") if read => {
            let (status, why) = health(local);
            response::start(&mut conn.out, status);
            response::header(&mut conn.out, "Content-Type", &[b"text/plain; charset=utf-8"]);
            Ok(Reply::Body(format!("{why}\n").into_bytes()))
        }
        (_, b"/") if read => {
            let html = admin::status_page(&snapshot(local));
            response::start(&mut conn.out, 200);
            response::header(&mut conn.out, "Content-Type", &[b"text/html; charset=utf-8"]);
            Ok(Reply::Body(html.into_bytes()))
        }
        (_, b"/metrics" | b"/health" | b"/") => Err(ApiError::MethodNotAllowed(ADMIN_METHODS)),
        _ => {
            response::start(&mut conn.out, 404);
            response::header(&mut conn.out, "Content-Type", &[b"text/plain; charset=utf-8"]);
            Ok(Reply::Body(b"not found: the admin port serves /metrics, /health and / (status)\n".to_vec()))
        }
    }
}

/// `200` while the master can take writes; `503` while it stops, while its index is found
/// corrupt or refuses writes (a full disk), or with fewer volumes up than a key needs
/// replicas (every PUT would fail).
fn health(local: &Local) -> (u16, String) {
    let sh = &local.ctx.shared;
    if sh.stopping() {
        return (503, "stopping".into());
    }
    if let Some(problem) = sh.index.problem() {
        return (503, problem);
    }
    let topo = local.ctx.topo();
    let up = topo.volumes.iter().filter(|v| topo.is_up(v)).count();
    if up < topo.replicas {
        return (503, format!("{up} of {} volumes up, {} replicas needed", topo.volumes.len(), topo.replicas));
    }
    // up, but writes wait there for a late answer: the keys it holds fail their PUTs meanwhile
    let fenced = topo.volumes.iter().filter_map(|v| topo.volume(v)).filter(|v| v.is_up() && !v.takes_writes()).count();
    if fenced > 0 {
        return (
            200,
            format!(
                "ok: {up} of {} volumes up; {fenced} take no write until a request that timed out there is answered",
                topo.volumes.len()
            ),
        );
    }
    (200, format!("ok: {up} of {} volumes up", topo.volumes.len()))
}

/// An admin method, on either port, once the caller may use it.
pub async fn method(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    authorize(&local.ctx, req)?;
    match req.method {
        Some(Method::Volumes) => volumes(local, conn, req).await,
        Some(Method::Repair) => repair(local, conn, req).await,
        Some(Method::Snapshot) => snapshot_index(local, conn, req).await,
        _ => Err(ApiError::MethodNotAllowed(super::handlers::KEY_METHODS)),
    }
}

/// `REPAIR /key[?suspects=a,b][&orphans=c,d][&markers=1]`: restores the key's missing or
/// damaged replicas (`suspects`: found corrupt by reading them) from one that verifies,
/// removes its files on `orphans` that no record names, and with `markers` puts its unlink
/// markers right; under the key's lock. `200` with what was done as JSON (`skipped`: replicas
/// on volumes that could not be asked, left for later; `adopted`: the record was stale and
/// now names the value every replica holds).
async fn repair(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    if req.parts {
        return repair_parts(local, conn, req).await;
    }
    let ask = repair::Ask { suspects: &req.suspects, markers: req.markers, strays: &req.orphans, known_bad: None };
    let (done, removed) = repair::key(&local.ctx, &req.key, &ask).await?;
    let body = serde_json::json!({
        "restored": done.restored,
        "markers": done.markers,
        "orphans": removed,
        "skipped": done.skipped,
        "adopted": done.adopted,
    });
    empty(conn, 200)?;
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(Reply::Body(body.to_string().into_bytes()))
}

/// `REPAIR /?parts[&deep=1][&check=1][&rate=N]` (what `mkv verify -online` asks after the
/// keys): checks every replica of every part of the S3 uploads in progress (`deep`: reads
/// them, at most N MiB/s) and, unless `check`, copies the damaged ones again; what it
/// found, as JSON.
async fn repair_parts(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    let opts = multipart::CheckOpts { deep: req.deep, repair: !req.check_only, rate: req.rate };
    let done = multipart::check_parts(&local.ctx, opts).await?;
    // strings, numbers and lists: serializing cannot fail
    let body = serde_json::to_vec(&done).unwrap_or_default();
    empty(conn, 200)?;
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(Reply::Body(body))
}

/// `SNAPSHOT /?to=DIR`: a consistent copy of the index (a RocksDB checkpoint: hard links
/// where DIR is on the index's filesystem) in DIR on the master's host, which must not
/// exist yet. A master started on DIR serves every key the snapshot holds.
async fn snapshot_index(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    let to = req.to.clone().ok_or(ApiError::BadQuery("SNAPSHOT needs ?to=DIR (a folder that does not exist yet)"))?;
    if !std::path::Path::new(&to).is_absolute() {
        // a relative one would land wherever the master was started from
        return Err(ApiError::BadQuery("SNAPSHOT needs an absolute ?to=DIR (a folder on the master's host)"));
    }
    let shared = local.ctx.shared.clone();
    let dir = std::path::PathBuf::from(&to);
    on_pool(move || shared.index.checkpoint(&dir)).await?.map_err(ApiError::BadConfig)?;
    let body = serde_json::json!({ "snapshot": to });
    empty(conn, 200)?;
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(Reply::Body(body.to_string().into_bytes()))
}

/// `VOLUMES /`: the volume list in force; with `?volumes=a,b,c[&replicas=N]`, switch to it
/// first (what `mkv rebalance -online` does). The switch probes new volumes, so it runs on
/// the blocking pool, never on this thread.
pub async fn volumes(local: &Local, conn: &mut Conn, req: &Req) -> Result<Reply, ApiError> {
    let ctx = &local.ctx;
    let replicas = match &req.replicas {
        None => None,
        Some(Ok(n)) => Some(*n),
        Some(Err(())) => return Err(ApiError::BadQuery("replicas must be a positive integer")),
    };
    if replicas.is_some() && req.volumes.is_none() {
        return Err(ApiError::BadQuery("replicas=N goes with volumes=a,b,c (the list to place N replicas on)"));
    }
    if let Some(list) = &req.volumes {
        let replicas = replicas.unwrap_or(ctx.topo().replicas);
        let list = names(list);
        let shared = ctx.shared.clone();
        on_pool(move || shared.set_volumes(&list, replicas)).await?.map_err(|r| match r {
            Refused::Invalid(why) => ApiError::BadConfig(why),
            Refused::Unreachable(why) => ApiError::Unreachable(why),
        })?;
    }
    let parts = if req.parts { Some(move_parts(ctx).await?) } else { None };
    let forgotten = match &req.settled {
        Some(list) => {
            let list = names(list);
            let outside = multipart::parts_outside(ctx, &list)?;
            if outside > 0 {
                return Err(ApiError::Conflict(format!(
                    "{outside} part(s) of S3 uploads in progress are still on volumes outside {}: run the \
                     rebalance again",
                    list.join(",")
                )));
            }
            let gone = ctx.shared.forget_removed(&list).map_err(ApiError::Conflict)?;
            let left = multipart::drop_volumes(ctx, &gone)?;
            if left > 0 {
                eprintln!(
                    "mkv: files of {left} ended S3 part(s) are left on {}, which left the list (not retried)",
                    gone.join(",")
                );
            }
            gone
        }
        None => Vec::new(),
    };
    let topo = ctx.shared.topology();
    let moves = &ctx.shared.moves;
    let body = serde_json::json!({
        "volumes": topo.volumes,
        "replicas": topo.replicas,
        "subvolumes": topo.subvolumes,
        // keys moved online whose old replicas wait out -move-grace, and deletions of old
        // replicas that failed since the start (mkv rebalance -online waits for the first)
        "moves_pending": moves.pending.load(Ordering::Relaxed),
        "moves_failed": moves.failed.load(Ordering::Relaxed),
        "move_grace_ms": ctx.shared.cfg.move_grace.as_millis() as u64,
        "started_ms": ctx.shared.started_ms,
        "parts": parts,
        "forgotten": forgotten,
    });
    empty(conn, 200)?;
    response::header(&mut conn.out, "Content-Type", &[b"application/json"]);
    Ok(Reply::Body(body.to_string().into_bytes()))
}

/// The volume names of a `VOLUMES` query's `a,b,c` (spaces around them and empty names
/// dropped, as `-volumes` has them).
fn names(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect()
}

/// `VOLUMES /?parts` (what `mkv rebalance -online` asks after the keys): moves the parts of
/// S3 uploads in progress to the placement in force; what came of them, as JSON.
async fn move_parts(ctx: &Ctx) -> Result<serde_json::Value, ApiError> {
    let (mut moved, mut in_place, mut gone, mut failed) = (0u64, 0u64, 0u64, Vec::new());
    multipart::relocate_parts(ctx, false, |name, r| match r {
        Ok(PartMove::Moved) => moved += 1,
        Ok(PartMove::InPlace) => in_place += 1,
        Ok(PartMove::Gone) => gone += 1,
        // only a dry run says it, and this is none
        Ok(PartMove::WouldMove) => {}
        Err(e) => {
            eprintln!("mkv: rebalance: could not move {name} ({e}); a rerun of the rebalance moves it");
            failed.push(format!("{name}: {e}"));
        }
    })
    .await?;
    Ok(serde_json::json!({ "moved": moved, "in_place": in_place, "gone": gone, "failed": failed }))
}

thread_local! {
    /// Request counts seen by earlier snapshots (the admin port runs on one thread), for rates.
    static SEEN: RefCell<VecDeque<(Instant, Vec<u64>)>> = const { RefCell::new(VecDeque::new()) };
}

fn per_method(t: &Totals) -> Vec<u64> {
    let mut n = vec![0u64; METHODS.len()];
    for (m, _, c) in &t.requests {
        n[*m] += c;
    }
    n
}

/// What the master knows now, for `/metrics` and the status page.
pub fn snapshot(local: &Local) -> Snapshot {
    let sh = &local.ctx.shared;
    let totals = sh.metrics.totals();
    let counts = per_method(&totals);
    let rates = SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        let now = Instant::now();
        while seen.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            seen.pop_front();
        }
        let rates = match seen.front() {
            Some((t, old)) if now.duration_since(*t) >= Duration::from_millis(500) => {
                let dt = now.duration_since(*t).as_secs_f64();
                Some(counts.iter().zip(old).map(|(n, o)| n.saturating_sub(*o) as f64 / dt).collect())
            }
            _ => None,
        };
        if seen.back().is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1)) {
            seen.push_back((now, counts));
        }
        rates
    });
    let topo = sh.topology();
    let mut volumes: Vec<VolumeState> = topo
        .all()
        .map(|v| VolumeState {
            name: v.name.clone(),
            up: v.is_up(),
            takes_writes: v.takes_writes(),
            errors: v.errors.load(std::sync::atomic::Ordering::Relaxed),
            placed: topo.volumes.contains(&v.name),
        })
        .collect();
    volumes.sort_by(|a, b| b.placed.cmp(&a.placed).then_with(|| a.name.cmp(&b.name)));
    let scrub = sh.scrub.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Snapshot {
        totals,
        volumes,
        index: sh.index.stats(),
        replicas: topo.replicas,
        uptime_secs: sh.started.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
        stopping: sh.stopping(),
        index_problem: sh.index.problem(),
        rates,
        last_rebalance: sh.last_rebalance.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        scrub,
    }
}
