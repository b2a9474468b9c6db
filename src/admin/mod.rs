//! What an operator reads off a running master: the Prometheus exposition and the status
//! page, rendered from a [`Snapshot`] the server takes; nothing here touches the server.

mod page;

use std::fmt::Write as _;

pub use page::status_page;

use crate::{
    index::Stats,
    metrics::{Totals, BUCKETS_US, METHODS},
};

/// One volume as the master sees it.
pub struct VolumeState {
    pub name: String,
    pub up: bool,
    /// Up, and no request that changes files awaits a late answer there (see `volume::Late`).
    pub takes_writes: bool,
    pub errors: u64,
    /// Whether new keys are placed on it (false: only old records name it).
    pub placed: bool,
}

/// The last background scrub (`-scrub`): what it found and did.
#[derive(Clone, Debug, Default)]
pub struct ScrubState {
    /// Scrubs finished since the master started.
    pub runs: u64,
    /// When the last one ended (Unix seconds) and how long it took.
    pub finished: u64,
    pub secs: f64,
    pub keys: u64,
    /// Problems found, by kind (every kind, zeros included).
    pub found: Vec<(&'static str, u64)>,
    pub repaired: u64,
    /// Listings, reads or repairs that failed (1 when the run itself failed).
    pub failures: u64,
    /// What the run came to, in one line.
    pub line: String,
}

/// Everything `/metrics` and the status page show, taken at one moment.
pub struct Snapshot {
    pub totals: Totals,
    pub volumes: Vec<VolumeState>,
    pub index: Stats,
    pub replicas: usize,
    pub uptime_secs: u64,
    pub version: &'static str,
    pub stopping: bool,
    /// What keeps the index from serving (corruption found, a full disk), as `/health` says it.
    pub index_problem: Option<String>,
    /// Requests per second over the last minute, per method (same order as [`METHODS`]);
    /// None before an earlier snapshot to compare with.
    pub rates: Option<Vec<f64>>,
    pub last_rebalance: Option<String>,
    pub scrub: Option<ScrubState>,
}

/// The Prometheus text exposition (version 0.0.4) of a snapshot.
pub fn prometheus(s: &Snapshot) -> String {
    let mut o = String::with_capacity(16 << 10);
    let t = &s.totals;
    family(&mut o, "mkv_requests_total", "counter", "Requests answered, by method and status code.");
    for (m, status, n) in &t.requests {
        let status = if *status == 0 { "other".to_string() } else { status.to_string() };
        let _ = writeln!(o, "mkv_requests_total{{method=\"{}\",status=\"{status}\"}} {n}", METHODS[*m]);
    }
    family(&mut o, "mkv_request_duration_seconds", "histogram", "Time from a request's head to its answer.");
    for (m, (buckets, sum_us)) in t.latency.iter().enumerate() {
        let count: u64 = buckets.iter().sum();
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            let le = if BUCKETS_US[i] == u64::MAX { "+Inf".to_string() } else { secs(BUCKETS_US[i]) };
            let _ = writeln!(
                o,
                "mkv_request_duration_seconds_bucket{{method=\"{}\",le=\"{le}\"}} {cumulative}",
                METHODS[m]
            );
        }
        let _ = writeln!(o, "mkv_request_duration_seconds_sum{{method=\"{}\"}} {}", METHODS[m], secs(*sum_us));
        let _ = writeln!(o, "mkv_request_duration_seconds_count{{method=\"{}\"}} {count}", METHODS[m]);
    }
    let simple: [(&str, &str, &str, String); 8] = [
        ("mkv_received_bytes_total", "counter", "Request bytes read (heads and bodies).", t.bytes_in.to_string()),
        ("mkv_sent_bytes_total", "counter", "Answer bytes written.", t.bytes_out.to_string()),
        (
            "mkv_get_cache_hits_total",
            "counter",
            "GETs and HEADs answered from a thread's cache (of answers, and of keys found missing).",
            t.cache_hits.to_string(),
        ),
        ("mkv_get_cache_misses_total", "counter", "GETs and HEADs that read the index.", t.cache_misses.to_string()),
        ("mkv_puts_in_flight", "gauge", "PUTs being written now.", t.puts_in_flight.max(0).to_string()),
        ("mkv_open_connections", "gauge", "Client connections open.", t.connections.max(0).to_string()),
        ("mkv_uptime_seconds", "gauge", "Seconds since the master started.", s.uptime_secs.to_string()),
        ("mkv_stopping", "gauge", "1 while the master drains for a stop.", (s.stopping as u8).to_string()),
    ];
    for (name, kind, help, value) in simple {
        family(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }
    family(&mut o, "mkv_volume_up", "gauge", "1 when the volume answers its probes.");
    for v in &s.volumes {
        let _ = writeln!(o, "mkv_volume_up{{volume=\"{}\"}} {}", label(&v.name), v.up as u8);
    }
    family(
        &mut o,
        "mkv_volume_takes_writes",
        "gauge",
        "1 when the volume is up and no request that timed out there may still be carried out.",
    );
    for v in &s.volumes {
        let _ = writeln!(o, "mkv_volume_takes_writes{{volume=\"{}\"}} {}", label(&v.name), v.takes_writes as u8);
    }
    family(&mut o, "mkv_volume_errors_total", "counter", "Requests to the volume that failed.");
    for v in &s.volumes {
        let _ = writeln!(o, "mkv_volume_errors_total{{volume=\"{}\"}} {}", label(&v.name), v.errors);
    }
    let ix = &s.index;
    let index: [(&str, &str, String); 6] = [
        ("mkv_index_keys", "Keys in the index, by state.", String::new()),
        ("mkv_index_sst_bytes", "Size of the index's table files.", ix.sst_bytes.to_string()),
        ("mkv_index_memtable_bytes", "Size of the index's memtables.", ix.memtable_bytes.to_string()),
        (
            "mkv_index_pending_compaction_bytes",
            "Bytes RocksDB estimates compaction must rewrite.",
            ix.pending_compaction_bytes.to_string(),
        ),
        ("mkv_replicas", "Replicas each new key gets.", s.replicas.to_string()),
        (
            "mkv_index_ok",
            "1 while the index serves reads and writes; 0 once found corrupt, or while its disk is full.",
            u8::from(s.index_problem.is_none()).to_string(),
        ),
    ];
    for (name, help, value) in index {
        family(&mut o, name, "gauge", help);
        if value.is_empty() {
            let _ = writeln!(o, "{name}{{state=\"live\"}} {}", ix.live_keys);
            let _ = writeln!(o, "{name}{{state=\"unlinked\"}} {}", ix.unlinked_keys);
        } else {
            let _ = writeln!(o, "{name} {value}");
        }
    }
    if let Some(sc) = &s.scrub {
        scrub(&mut o, sc);
    }
    family(&mut o, "mkv_build_info", "gauge", "The running version (value 1).");
    let _ = writeln!(o, "mkv_build_info{{version=\"{}\"}} 1", label(s.version));
    o
}

/// The `-scrub` families: the last run's figures.
fn scrub(o: &mut String, sc: &ScrubState) {
    let simple: [(&str, &str, &str, String); 6] = [
        ("mkv_scrub_runs_total", "counter", "Background scrubs finished since start.", sc.runs.to_string()),
        (
            "mkv_scrub_last_run_timestamp_seconds",
            "gauge",
            "When the last scrub ended (Unix time).",
            sc.finished.to_string(),
        ),
        ("mkv_scrub_last_duration_seconds", "gauge", "How long the last scrub took.", format!("{:.3}", sc.secs)),
        ("mkv_scrub_keys", "gauge", "Keys the last scrub checked.", sc.keys.to_string()),
        ("mkv_scrub_repaired", "gauge", "Problems the last scrub repaired.", sc.repaired.to_string()),
        (
            "mkv_scrub_failures",
            "gauge",
            "Listings, reads or repairs the last scrub could not do (1: the run failed).",
            sc.failures.to_string(),
        ),
    ];
    for (name, kind, help, value) in simple {
        family(o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }
    family(o, "mkv_scrub_problems", "gauge", "Problems the last scrub found, by kind.");
    for (kind, n) in &sc.found {
        let _ = writeln!(o, "mkv_scrub_problems{{kind=\"{}\"}} {n}", label(kind));
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Microseconds as seconds, exactly (no float noise in bucket bounds).
fn secs(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

/// A label value, escaped as the exposition format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;

    #[test]
    fn exposition_has_help_type_and_cumulative_buckets() {
        let r = Registry::default();
        let b = r.block();
        b.request(crate::metrics::GET, 302, 30);
        b.request(crate::metrics::GET, 302, 700);
        let s = Snapshot {
            totals: r.totals(),
            volumes: vec![VolumeState { name: "a:1".into(), up: true, takes_writes: true, errors: 2, placed: true }],
            index: Stats::default(),
            replicas: 3,
            uptime_secs: 5,
            version: "0.1.0",
            stopping: false,
            index_problem: None,
            rates: None,
            last_rebalance: None,
            scrub: None,
        };
        let text = prometheus(&s);
        assert!(!text.contains("mkv_scrub"), "no scrub, no scrub figures");
        let s = Snapshot {
            scrub: Some(ScrubState {
                runs: 2,
                finished: 1_800_000_000,
                secs: 1.5,
                keys: 10,
                found: vec![("missing", 3), ("orphans", 0)],
                repaired: 3,
                failures: 0,
                line: String::new(),
            }),
            ..s
        };
        let text = prometheus(&s);
        assert!(text.contains("mkv_scrub_last_run_timestamp_seconds 1800000000\n"), "{text}");
        assert!(text.contains("mkv_scrub_problems{kind=\"missing\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE mkv_scrub_runs_total counter\nmkv_scrub_runs_total 2\n"), "{text}");
        assert!(text.contains("mkv_requests_total{method=\"GET\",status=\"302\"} 2"), "{text}");
        assert!(text.contains("mkv_request_duration_seconds_bucket{method=\"GET\",le=\"0.00005\"} 1"), "{text}");
        assert!(text.contains("mkv_request_duration_seconds_bucket{method=\"GET\",le=\"0.001\"} 2"), "{text}");
        assert!(text.contains("mkv_request_duration_seconds_bucket{method=\"GET\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("mkv_request_duration_seconds_sum{method=\"GET\"} 0.00073"), "{text}");
        assert!(text.contains("mkv_volume_errors_total{volume=\"a:1\"} 2"));
        assert_eq!(secs(1_000_000), "1");
        assert_eq!(secs(2_500), "0.0025");
    }
}
