//! Replicas to their placement: one key on the running server (`REBALANCE /key`), every key
//! offline (`mkv rebalance -db`), or every key through a running master (`-online URL`).
//!
//! Per key the order is what makes it safe to interrupt anywhere: copy to the volumes that
//! lack it (streamed from a live replica) → the record lists new and old → delete the old →
//! the record lists the new. A rerun finds each key either done or with work left to redo.

use std::{rc::Rc, sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{
    config::Config,
    index::{Index, State},
    placement::{key_path, replica_target, targets, MARKER_DIR},
    progress::Progress,
    record::Record,
    server::{ApiError, Ctx, Shared, REBALANCED_TO},
    volume::{self, Client, Topology},
};

/// Largest piece of a value held in memory while it is copied between volumes.
const COPY_CHUNK: usize = 256 << 10;
/// Keys read from the index (or a listing page) per round of work.
const BATCH: usize = 1000;
/// Attempts for a key another request is writing (`409`) before it counts as failed.
const BUSY_RETRIES: u32 = 20;

pub struct Options {
    pub dry_run: bool,
    pub online: Option<String>,
    pub concurrency: usize,
}

/// What happened to one key.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already where placement wants it.
    InPlace,
    Moved,
    /// `dry_run`: would move from these replicas to those.
    WouldMove(Vec<String>, Vec<String>),
}

/// Moves one key's replicas to where placement wants them now, keeping its state, size and MD5.
pub async fn one(ctx: &Ctx, key: &[u8], dry_run: bool) -> Result<Outcome, ApiError> {
    let sh = &ctx.shared;
    let _claim = sh.locks.try_lock(key).ok_or(ApiError::InFlight)?;
    let (state, rec) = sh.index.get(key)?.ok_or(ApiError::NotFound)?;
    let topo = ctx.topo();
    let want = topo.place(key);
    if rec.volumes == want {
        return Ok(Outcome::InPlace);
    }
    if dry_run {
        return Ok(Outcome::WouldMove(rec.volumes, want));
    }
    let path = key_path(key);
    let marker = format!("{MARKER_DIR}{path}");
    let missing: Vec<String> = want.iter().filter(|w| !rec.volumes.contains(w)).cloned().collect();
    if !missing.is_empty() {
        let src = rec.volumes.iter().find(|v| topo.is_up(v)).ok_or(ApiError::NoLiveReplica)?;
        copy(&ctx.client, &topo, src, &path, &targets(&missing, &path)).await?;
        if state == State::Unlinked {
            ctx.client.put_all(&topo, &targets(&missing, &marker), b"unlinked\n").await?;
        }
    }
    let extra: Vec<String> = rec.volumes.iter().filter(|v| !want.contains(v)).cloned().collect();
    if !extra.is_empty() {
        // until the old replicas are gone the record names them, so a failure leaves no
        // unlisted file; new ones first, so GETs go there
        let both = Record { volumes: want.iter().chain(&extra).cloned().collect(), ..rec.clone() };
        sh.index.set(key, state, &both)?;
        let mut gone = targets(&extra, &path);
        if state == State::Unlinked {
            gone.extend(targets(&extra, &marker));
        }
        ctx.client.delete_all(&topo, &gone).await?;
    }
    sh.index.set(key, state, &Record { volumes: want, ..rec })?;
    Ok(Outcome::Moved)
}

/// Streams the file at `path` of replica `src` to every `(server, path)` of `to`.
async fn copy(
    client: &Client,
    topo: &Topology,
    src: &str,
    path: &str,
    to: &[(String, String)],
) -> Result<(), ApiError> {
    let (server, spath) = replica_target(src, path);
    let mut d = client.download(topo, &server, &spath).await?;
    if d.status != 200 {
        return Err(volume::Error::Status(server, d.status).into());
    }
    let Some(len) = d.length else {
        return Err(volume::Error::Protocol(server, "no Content-Length on a stored value").into());
    };
    let mut up = client.upload(topo, to, Some(len)).await?;
    while let Some(chunk) = client.next_chunk(&mut d, COPY_CHUNK).await? {
        client.upload_chunk(&mut up, chunk).await?;
    }
    client.finish(d);
    client.upload_finish(up).await?;
    Ok(())
}

pub fn run(cfg: Config, opts: Options) -> anyhow::Result<()> {
    if let Some(url) = opts.online.clone() {
        return run_online(cfg, &url, opts);
    }
    let index = Index::open(&cfg.db).map_err(|e| {
        anyhow::anyhow!(
            "{e}{}",
            if e.contains("locked") { "; to rebalance a running master use -online http://host:port" } else { "" }
        )
    })?;
    let shared = Arc::new(Shared::new(cfg, index));
    let down: Vec<String> = shared.topology().all().filter(|v| !v.is_up()).map(|v| v.name.clone()).collect();
    if !down.is_empty() {
        bail!("volume(s) {} unreachable: a rebalance needs every target up", down.join(", "));
    }
    let progress = Progress::new("rebalance", None);
    let mut rt = runtime()?;
    rt.block_on(async {
        let ctx = Rc::new(Ctx::new(shared.clone()));
        for state in [State::Live, State::Unlinked] {
            let mut start: Vec<u8> = Vec::new();
            loop {
                // a page of keys, then the work on them: no iterator is held while volumes answer
                let mut keys = Vec::with_capacity(BATCH);
                {
                    let mut scan = shared.index.scan(state, b"", &start);
                    while let Some((k, _)) = scan.next() {
                        if keys.len() == BATCH {
                            start = k.to_vec();
                            break;
                        }
                        keys.push(k.to_vec());
                    }
                    scan.status()?;
                }
                let last_page = keys.len() < BATCH || start <= *keys.last().unwrap_or(&start);
                let mut work = FuturesUnordered::new();
                let mut it = keys.into_iter();
                loop {
                    while work.len() < opts.concurrency {
                        let Some(k) = it.next() else { break };
                        let ctx = ctx.clone();
                        work.push(async move {
                            let r = one(&ctx, &k, opts.dry_run).await;
                            (k, r)
                        });
                    }
                    let Some((k, r)) = work.next().await else { break };
                    record(&progress, &k, r);
                }
                if last_page {
                    break;
                }
            }
        }
        if !opts.dry_run {
            shared.index.set_meta(REBALANCED_TO, shared.cfg.volumes.join(",").as_bytes())?;
        }
        anyhow::Ok(())
    })?;
    progress.finish()
}

fn record(progress: &Progress, key: &[u8], r: Result<Outcome, ApiError>) {
    let name = String::from_utf8_lossy(key);
    match r {
        Ok(Outcome::InPlace) => progress.count("in place", 1),
        Ok(Outcome::Moved) => progress.count("moved", 1),
        Ok(Outcome::WouldMove(from, to)) => {
            progress.println(&format!("would move {name}: {} -> {}", from.join(","), to.join(",")));
            progress.count("would move", 1);
        }
        // deleted since it was listed
        Err(ApiError::NotFound) => progress.count("gone", 1),
        Err(e) => progress.fail(&name, &e.to_string()),
    }
}

fn runtime() -> anyhow::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> {
    // batch work on one thread: the legacy driver needs no io_uring and is plenty here
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().context("cannot start the runtime")
}

/// `-online http://host:port`: switch the master to the new volume list (`VOLUMES`), then
/// ask it to `REBALANCE` every key, live and unlinked; the master serves throughout.
fn run_online(cfg: Config, url: &str, opts: Options) -> anyhow::Result<()> {
    let master = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    if master.is_empty() || master.contains('/') {
        bail!("-online wants the master as http://host:port, not '{url}'");
    }
    if opts.dry_run {
        bail!("-dry-run works offline only (it reads the index directly)");
    }
    let topo = Topology::new(&[], 1, 1, Duration::from_secs(30), None);
    let progress = Progress::new("rebalance", None);
    let mut rt = runtime()?;
    rt.block_on(async {
        let client = Rc::new(Client::new());
        let switch = format!("/?volumes={}&replicas={}", cfg.volumes.join(","), cfg.replicas);
        let (status, body) = client
            .get_with(&topo, &master, "VOLUMES", &switch, 1 << 20)
            .await
            .with_context(|| format!("cannot reach the master at {master}"))?;
        if status != 200 {
            bail!("the master refused the volume list ({status}): {}", String::from_utf8_lossy(&body).trim());
        }
        progress.println(&format!("master {master} now places keys on {}", cfg.volumes.join(",")));
        for list in ["list", "unlinked"] {
            let mut start = String::new();
            loop {
                let page = format!("/?{list}&limit={BATCH}&start={start}");
                let (status, body) = client.get(&topo, &master, &page, 64 << 20).await?;
                if status != 200 {
                    bail!("listing keys failed ({status})");
                }
                let page: serde_json::Value = serde_json::from_slice(&body).context("bad listing from the master")?;
                let keys: Vec<String> = page["keys"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let mut work = FuturesUnordered::new();
                let mut it = keys.into_iter();
                loop {
                    while work.len() < opts.concurrency {
                        let Some(k) = it.next() else { break };
                        let (client, topo, master) = (client.clone(), &topo, &master);
                        work.push(async move {
                            let path = encode_path(&k);
                            let mut tries = 0;
                            loop {
                                match client.request(topo, master, "REBALANCE", &path, b"").await {
                                    Ok(409) if tries < BUSY_RETRIES => {
                                        tries += 1;
                                        monoio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                    r => return (k, r),
                                }
                            }
                        });
                    }
                    let Some((k, r)) = work.next().await else { break };
                    match r {
                        Ok(204) => progress.count("rebalanced", 1),
                        Ok(404) => progress.count("gone", 1),
                        Ok(s) => progress.fail(&k, &format!("master answered {s}")),
                        Err(e) => progress.fail(&k, &e.to_string()),
                    }
                }
                match page["next"].as_str() {
                    Some(n) if !n.is_empty() => start = encode_path(n),
                    _ => break,
                }
            }
        }
        anyhow::Ok(())
    })?;
    progress.finish()
}

/// Percent-encodes a key for a request path (`/` and unreserved bytes stay).
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_encoded() {
        assert_eq!(super::encode_path("/a b/c%?&"), "/a%20b/c%25%3F%26");
    }
}
