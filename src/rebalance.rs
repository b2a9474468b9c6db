//! Every key's replicas to their placement: offline (`mkv rebalance -db`, the master
//! stopped) or through a running master (`-online URL`), one key at a time with
//! [`relocate::one`], which makes each key safe to interrupt anywhere.

use std::{rc::Rc, sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{
    config::{master_refusal, Config},
    index::{Index, State},
    progress::Progress,
    s3::multipart::{self, PartMove, PartName},
    store::{
        relocate::{self, Outcome},
        Ctx, Error, Shared, REBALANCED_REPLICAS, REBALANCED_TO,
    },
    volume::{Client, Topology},
};

/// Keys read from the index (or a listing page) per round of work.
const BATCH: usize = 1000;
/// Attempts for a key another request is writing (`409`) before it counts as failed.
const BUSY_RETRIES: u32 = 20;

pub struct Options {
    pub dry_run: bool,
    pub online: Option<String>,
    /// `-replicas` as given: `-online` without it keeps the master's own count.
    pub replicas: Option<usize>,
    pub concurrency: usize,
}

pub fn run(cfg: Config, opts: Options) -> anyhow::Result<()> {
    if let Some(url) = opts.online.clone() {
        return run_online(cfg, &url, opts);
    }
    let index = Index::open_existing(&cfg.db).map_err(|e| {
        anyhow::anyhow!(
            "{e}{}",
            if e.contains("locked") { "; to rebalance a running master use -online http://host:port" } else { "" }
        )
    })?;
    let harm = "moves and deletes replicas that master's records still name";
    crate::served::check(&index, &cfg.volumes, "rebalance", (!opts.dry_run).then_some(harm))?;
    // probed as the server's are: a volume marked down by one timeout is found up again
    // (unprobed, it stayed down for the rest of the run, failing every key it held)
    let shared = Arc::new(Shared::new(cfg, index, true)?);
    let down: Vec<String> = shared.topology().all().filter(|v| !v.is_up()).map(|v| v.name.clone()).collect();
    if !down.is_empty() {
        bail!("volume(s) {} unreachable: a rebalance needs every target up", down.join(", "));
    }
    let progress = Progress::new("rebalance", None);
    let mut rt = runtime()?;
    rt.block_on(async {
        let ctx = Rc::new(Ctx::new(shared.clone()));
        let mut again = Vec::new();
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
                relocate_all(&ctx, keys, &opts, &progress, Some(&mut again)).await;
                if last_page {
                    break;
                }
            }
        }
        if !again.is_empty() {
            progress.println(&format!(
                "trying again {} keys whose volume timed out, dropped the connection or was down",
                again.len()
            ));
            // the fault marked the volume down: the prober finds it up again within a second
            let began = std::time::Instant::now();
            while shared.topology().all().any(|v| !v.is_up()) && began.elapsed() < AGAIN_WAIT {
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
            relocate_all(&ctx, std::mem::take(&mut again), &opts, &progress, None).await;
        }
        // after the keys: a part goes where its upload's key is placed
        multipart::relocate_parts(&ctx, opts.dry_run, |name, r| record_part(&progress, name, r)).await?;
        if !opts.dry_run {
            shared.index.set_meta(REBALANCED_TO, shared.cfg.volumes.join(",").as_bytes())?;
            shared.index.set_meta(REBALANCED_REPLICAS, shared.cfg.replicas.to_string().as_bytes())?;
        }
        anyhow::Ok(())
    })?;
    // the next start of the master has no log to replay
    shared.index.flush().context("cannot flush the index")?;
    progress.finish()
}

/// Keys kept for one more try after the pass ([`relocate_all`]); past that, they fail at once.
const AGAIN_MAX: usize = 100_000;
/// Longest wait, before that try, for every volume to be up again.
const AGAIN_WAIT: Duration = Duration::from_secs(10);

/// Relocates `keys`, `-concurrency` at a time. A key whose volume timed out, dropped the
/// connection or was marked down for it goes to `again` when given (a stall of a second,
/// seen once in a million keys under load, should not need a rerun); every other outcome is
/// counted.
async fn relocate_all(
    ctx: &Rc<Ctx>,
    keys: Vec<Vec<u8>>,
    opts: &Options,
    progress: &Progress,
    mut again: Option<&mut Vec<Vec<u8>>>,
) {
    let mut work = FuturesUnordered::new();
    let mut it = keys.into_iter();
    loop {
        while work.len() < opts.concurrency {
            let Some(k) = it.next() else { break };
            let (ctx, dry_run) = (ctx.clone(), opts.dry_run);
            work.push(async move {
                let r = relocate::one(&ctx, &k, dry_run).await;
                (k, r)
            });
        }
        let Some((k, r)) = work.next().await else { break };
        match (again.as_deref_mut(), r) {
            // a volume that could not be reached: asked again at the end
            (Some(a), Err(Error::Volume(e))) if e.unreachable() && a.len() < AGAIN_MAX => a.push(k),
            (_, r) => record(progress, &k, r),
        }
    }
}

fn record(progress: &Progress, key: &[u8], r: Result<Outcome, Error>) {
    let name = key.escape_ascii().to_string();
    match r {
        Ok(Outcome::InPlace) => progress.count("in place", 1),
        Ok(Outcome::Restored(r)) => {
            progress.println(&format!("restored {name} on {}", r.join(",")));
            progress.count("restored", 1);
        }
        Ok(Outcome::Moved) => progress.count("moved", 1),
        Ok(Outcome::WouldMove(from, to)) => {
            progress.println(&format!("would move {name}: {} -> {}", from.join(","), to.join(",")));
            progress.count("would move", 1);
        }
        Ok(Outcome::Deleted) => {
            progress.println(&format!("deleted {name}: a PUT or DELETE of it had failed half way"));
            progress.count("deleted", 1);
        }
        Ok(Outcome::WouldDelete) => {
            progress.println(&format!("would delete {name}: a PUT or DELETE of it had failed half way"));
            progress.count("would delete", 1);
        }
        // deleted since it was listed
        Err(Error::NotFound) => progress.count("gone", 1),
        Err(e) => progress.fail(&name, &e.to_string()),
    }
}

/// A part is no key: tallied apart, and a failure is named without counting as a key.
fn record_part(progress: &Progress, name: PartName, r: Result<PartMove, Error>) {
    match r {
        Ok(PartMove::InPlace) => progress.note("parts in place", 1),
        Ok(PartMove::Moved) => progress.note("parts moved", 1),
        Ok(PartMove::WouldMove) => {
            progress.println(&format!("would move {name}"));
            progress.note("parts would move", 1);
        }
        Ok(PartMove::Gone) => progress.note("parts gone", 1),
        Err(e) => progress.error(&name.to_string(), &e.to_string()),
    }
}

fn runtime() -> anyhow::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> {
    // batch work on one thread: the legacy driver needs no io_uring and is plenty here; a
    // pool for the hashing of a replica restored (a key in place whose file is missing)
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(1)))
        .build()
        .context("cannot start the runtime")
}

/// `-online http://host:port`: switch the master to the new volume list (`VOLUMES`), then
/// ask it to `REBALANCE` every key, live and unlinked; the master serves throughout.
fn run_online(cfg: Config, url: &str, opts: Options) -> anyhow::Result<()> {
    // main refused a bad URL and -dry-run with -online already (usage errors)
    let master = crate::config::master_addr(url).map_err(anyhow::Error::msg)?;
    let topo = Topology::new(&[], 1, 1, Duration::from_secs(30), None);
    let progress = Progress::new("rebalance", None);
    let mut rt = runtime()?;
    rt.block_on(async {
        let client = Rc::new(Client::new(cfg.volume_rcvbuf));
        let auth = cfg.admin_token.as_ref().map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let auth = auth.as_bytes();
        let before = switch_volumes(&client, &topo, &master, &cfg, opts.replicas, auth, &progress).await?;
        rebalance_every_key(&client, &topo, &master, opts.concurrency, &progress).await?;
        move_parts_online(&client, &master, auth, &progress).await?;
        await_old_replicas(&client, &topo, &master, &before, auth, &progress).await?;
        forget_removed(&client, &topo, &master, &cfg.volumes, auth, &progress).await
    })?;
    progress.finish()
}

/// Switches the master to `cfg.volumes` (and `replicas`, when given), after making sure
/// `master` is its API address: its moves as they stood before.
async fn switch_volumes(
    client: &Client,
    topo: &Topology,
    master: &str,
    cfg: &Config,
    replicas: Option<usize>,
    auth: &[u8],
    progress: &Progress,
) -> anyhow::Result<Moves> {
    // -replicas only when given: the default (3) would change a master of another count
    // and copy or drop a replica of every key
    let mut switch = format!("/?volumes={}", cfg.volumes.join(","));
    if let Some(n) = replicas {
        switch.push_str(&format!("&replicas={n}"));
    }
    // the keys are listed through the API port: asked first, so that an -admin address
    // (which takes VOLUMES too) is refused before it switched anything (url-encoded: a
    // key outside UTF-8 is written `\udcXX` otherwise, which JSON parsers refuse)
    let (status, body) = client
        .get(topo, master, "/?list&limit=1&encoding=url", 1 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the master at {master}: {}", e.cause()))?;
    if status != 200 || serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        bail!(
            "{master} answered a listing with no JSON listing ({status}): is it the master's API address \
             (not its -admin one)? Nothing switched"
        );
    }
    let (status, body) = client
        .get_with(topo, master, "VOLUMES", &switch, auth, 1 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the master at {master}: {}", e.cause()))?;
    if status != 200 {
        bail!("the master refused the volume list ({status}): {}", master_refusal(master, &body));
    }
    progress.println(&format!("master {master} now places keys on {}", cfg.volumes.join(",")));
    moves_of(&body)
}

/// Asks the master to `REBALANCE` every key it lists, live and unlinked, page by page; the
/// keys whose move met a volume too busy to answer in time are asked again after the pass.
async fn rebalance_every_key(
    client: &Rc<Client>,
    topo: &Topology,
    master: &str,
    concurrency: usize,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut again = Vec::new();
    for list in ["list", "unlinked"] {
        let mut start = String::new();
        loop {
            // keys percent-encoded: every key round-trips, UTF-8 or not
            let page = format!("/?{list}&encoding=url&limit={BATCH}&start={start}");
            let (status, body) = client
                .get(topo, master, &page, 64 << 20)
                .await
                .map_err(|e| anyhow::anyhow!("listing keys on the master at {master} failed: {}", e.cause()))?;
            if status != 200 {
                bail!("listing keys failed ({status})");
            }
            let page: serde_json::Value = serde_json::from_slice(&body).context("bad listing from the master")?;
            let Some(keys) = page["keys"].as_array() else { bail!("bad listing from the master: no keys") };
            let keys: Vec<String> = keys
                .iter()
                .map(|k| k.as_str().map(str::to_string).context("bad listing from the master: a key is not a string"))
                .collect::<anyhow::Result<_>>()?;
            ask_rebalance(client, topo, master, keys, concurrency, progress, Some(&mut again)).await;
            match page["next"].as_str() {
                Some(n) if !n.is_empty() => start = n.to_string(),
                _ => break,
            }
        }
    }
    if !again.is_empty() {
        progress.println(&format!("{} key(s) met a busy volume: asking again, fewer at once", again.len()));
        monoio::time::sleep(AGAIN_PAUSE).await;
        ask_rebalance(client, topo, master, again, AGAIN_CONCURRENCY, progress, None).await;
    }
    Ok(())
}

/// Waits for the master to delete the old replicas of the keys it moved (it does after its
/// `-move-grace`): done when it has none left, an error when it restarted meanwhile or
/// still has some after the grace and `SETTLE_WAIT`.
async fn await_old_replicas(
    client: &Client,
    topo: &Topology,
    master: &str,
    before: &Moves,
    auth: &[u8],
    progress: &Progress,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + before.grace + SETTLE_WAIT;
    let mut said = false;
    loop {
        let (status, body) = client
            .get_with(topo, master, "VOLUMES", "/", auth, 1 << 20)
            .await
            .map_err(|e| anyhow::anyhow!("asking the master at {master} for its moves failed: {}", e.cause()))?;
        if status != 200 {
            bail!("asking the master for its moves failed ({status})");
        }
        let Moves { pending, failed, started_ms, .. } = moves_of(&body)?;
        if started_ms != before.started_ms {
            bail!(
                "the master restarted during the rebalance: old replicas of keys it moved may not \
                 all be deleted; rerun the rebalance to finish them"
            );
        }
        if pending == 0 {
            if failed > before.failed {
                progress.error(
                    "old replicas",
                    &format!(
                        "the master could not delete the old replicas of {} moved key(s) (its log names \
                         them); rerun the rebalance",
                        failed - before.failed
                    ),
                );
            }
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the master still has the old replicas of {pending} moved key(s) to delete; rerun the rebalance");
        }
        if !said {
            progress.println(&format!("waiting for the master to delete the old replicas of {pending} moved key(s)"));
            said = true;
        }
        monoio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long an online rebalance lets the volumes settle before it asks again for the keys
/// whose moves met a volume too busy to answer, and how many it then asks at once.
const AGAIN_PAUSE: Duration = Duration::from_secs(2);
const AGAIN_CONCURRENCY: usize = 4;

/// Asks the master to `REBALANCE` each of `keys`, `concurrency` at a time, and tallies the
/// answers. A move that met a volume too slow to answer (`502`/`503`/`504`, or the master
/// not answering) goes to `again` when given, while it holds fewer than [`AGAIN_MAX`].
async fn ask_rebalance(
    client: &Rc<Client>,
    topo: &Topology,
    master: &str,
    keys: Vec<String>,
    concurrency: usize,
    progress: &Progress,
    mut again: Option<&mut Vec<String>>,
) {
    let mut work = FuturesUnordered::new();
    let mut it = keys.into_iter();
    loop {
        while work.len() < concurrency {
            let Some(k) = it.next() else { break };
            let client = client.clone();
            work.push(async move {
                let mut tries = 0;
                loop {
                    match client.request_saying(topo, master, "REBALANCE", &k, "Key-Rebalance").await {
                        Ok((409, _)) if tries < BUSY_RETRIES => {
                            tries += 1;
                            monoio::time::sleep(Duration::from_millis(50)).await;
                        }
                        r => return (k, r),
                    }
                }
            });
        }
        let Some((k, r)) = work.next().await else { break };
        let busy = matches!(r, Ok((502..=504, _)) | Err(_));
        match (again.as_deref_mut(), r) {
            (Some(a), _) if busy && a.len() < AGAIN_MAX => a.push(k),
            // counted as the offline rebalance counts them (a master without the header: as one)
            (_, Ok((204, said))) => match said.as_deref() {
                Some(relocate::IN_PLACE) => progress.count("in place", 1),
                Some(relocate::MOVED) => progress.count("moved", 1),
                Some(relocate::RESTORED) => {
                    progress.println(&format!("restored {k}"));
                    progress.count("restored", 1)
                }
                Some(relocate::DELETED) => {
                    progress.println(&format!("deleted {k}: a PUT or DELETE of it had failed half way"));
                    progress.count("deleted", 1)
                }
                _ => progress.count("rebalanced", 1),
            },
            (_, Ok((404, _))) => progress.count("gone", 1),
            (_, Ok((s, _))) => progress.fail(&k, &format!("master answered {s}")),
            (_, Err(e)) => progress.fail(&k, &format!("the master at {master}: {}", e.cause())),
        }
    }
}

/// Longest wait for the master's answer to `VOLUMES /?parts`, which comes once every part
/// of the uploads in progress is copied.
const PARTS_WAIT: Duration = Duration::from_secs(3600);

/// Asks the master to move the parts of S3 uploads in progress (after the keys: a part goes
/// where its upload's key is placed) and tallies what it did.
async fn move_parts_online(client: &Client, master: &str, auth: &[u8], progress: &Progress) -> anyhow::Result<()> {
    let patient = Topology::new(&[], 1, 1, PARTS_WAIT, None);
    let (status, body) = client
        .get_with(&patient, master, "VOLUMES", "/?parts", auth, 16 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("asking the master at {master} to move S3 upload parts failed: {}", e.cause()))?;
    if status != 200 {
        bail!("the master could not move S3 upload parts ({status}): {}", master_refusal(master, &body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).context("bad answer to VOLUMES /?parts")?;
    let parts = &v["parts"];
    for (field, tally) in [("moved", "parts moved"), ("in_place", "parts in place"), ("gone", "parts gone")] {
        match parts[field].as_u64() {
            Some(0) => {}
            Some(n) => progress.note(tally, n),
            None => bail!("bad answer to VOLUMES /?parts: no {field} (a master too old to move parts?)"),
        }
    }
    for failed in parts["failed"].as_array().into_iter().flatten().filter_map(|f| f.as_str()) {
        let (name, why) = failed.split_once(": ").unwrap_or((failed, "failed"));
        progress.error(name, why);
    }
    Ok(())
}

/// Once every key and part has moved, tells the master to forget the volumes that left the
/// list (no more probes, metrics or status-page rows for them). Not after a failure: records
/// may still name them.
async fn forget_removed(
    client: &Client,
    topo: &Topology,
    master: &str,
    volumes: &[String],
    auth: &[u8],
    progress: &Progress,
) -> anyhow::Result<()> {
    if progress.summary().failures > 0 {
        progress.println("the volumes that left the list stay watched by the master until a rerun succeeds");
        return Ok(());
    }
    let query = format!("/?settled={}", volumes.join(","));
    let (status, body) = client
        .get_with(topo, master, "VOLUMES", &query, auth, 1 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("the master at {master}: {}", e.cause()))?;
    let text = master_refusal(master, &body);
    match status {
        200 => {
            let v: serde_json::Value = serde_json::from_slice(&body).context("bad answer to VOLUMES /?settled")?;
            let gone: Vec<&str> = v["forgotten"].as_array().into_iter().flatten().filter_map(|g| g.as_str()).collect();
            if !gone.is_empty() {
                progress.println(&format!("master {master} no longer watches {}", gone.join(",")));
            }
        }
        // a part recorded after the parts moved, whose own move failed: the old volumes still
        // hold it, so they must not be stopped yet
        409 if String::from_utf8_lossy(&body).contains("run the rebalance again") => {
            bail!("the master keeps watching every volume: {text}")
        }
        // another volume change since ours: the volumes stay for the rebalance onto that list
        409 => progress.println(&format!("the master keeps watching every volume: {text}")),
        s => bail!("the master refused to forget the volumes that left the list ({s}): {text}"),
    }
    Ok(())
}

/// How long the end of an online rebalance waits, beyond the master's `-move-grace`, for it
/// to delete old replicas.
const SETTLE_WAIT: Duration = Duration::from_secs(300);

/// What a `VOLUMES /` answer says of the master's moves (0 where a master says nothing).
struct Moves {
    pending: u64,
    failed: u64,
    grace: Duration,
    /// When the master started: another value means it restarted, its queue lost.
    started_ms: u64,
}

fn moves_of(body: &[u8]) -> anyhow::Result<Moves> {
    let v: serde_json::Value = serde_json::from_slice(body).context("bad answer to VOLUMES from the master")?;
    let n = |name: &str| v[name].as_u64().unwrap_or(0);
    Ok(Moves {
        pending: n("moves_pending"),
        failed: n("moves_failed"),
        grace: Duration::from_millis(n("move_grace_ms")),
        started_ms: n("started_ms"),
    })
}
