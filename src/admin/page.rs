//! The status page: one plain HTML page (no script) an operator opens on the admin port:
//! volumes and their health, request rates, latency percentiles, key counts, last events.

use std::fmt::Write as _;

use super::Snapshot;
use crate::metrics::METHODS;

pub fn status_page(s: &Snapshot) -> String {
    let mut o = String::with_capacity(8 << 10);
    let up = s.volumes.iter().filter(|v| v.up).count();
    let health = if s.stopping {
        ("stopping", "warn")
    } else if up == s.volumes.len() {
        ("healthy", "ok")
    } else if up >= s.replicas {
        ("degraded", "warn")
    } else {
        ("writes failing", "bad")
    };
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>mkv status</title><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:60em}}\
         h1{{font-size:1.4em}} h2{{font-size:1.1em;margin-top:1.6em}}\
         table{{border-collapse:collapse;margin:.4em 0}} td,th{{padding:.25em .9em;border-bottom:1px solid #ddd;text-align:left}}\
         th{{background:#f4f4f4}} td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         .ok{{color:#176f2c}} .warn{{color:#9a6700}} .bad{{color:#b42318}} .muted{{color:#777}}\
         </style></head><body><h1>mkv <span class=\"{}\">{}</span></h1>\
         <p class=\"muted\">version {} · up {} · {} of {} volumes up · {} replicas per key · refreshes every 5 s</p>",
        health.1,
        health.0,
        esc(s.version),
        duration(s.uptime_secs),
        up,
        s.volumes.len(),
        s.replicas
    );
    o.push_str("<h2>Volumes</h2><table><tr><th>volume</th><th>health</th><th>errors</th><th>new keys</th></tr>");
    for v in &s.volumes {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&v.name),
            if v.up { "ok" } else { "bad" },
            if v.up { "up" } else { "down" },
            v.errors,
            if v.placed { "placed here" } else { "<span class=\"muted\">old records only</span>" }
        );
    }
    o.push_str("</table>");
    o.push_str(
        "<h2>Requests</h2><table><tr><th>method</th><th>per second (last minute)</th><th>total</th>\
         <th>p50</th><th>p90</th><th>p99</th></tr>",
    );
    for (m, name) in METHODS.iter().enumerate() {
        let total: u64 = s.totals.requests.iter().filter(|r| r.0 == m).map(|r| r.2).sum();
        if total == 0 {
            continue;
        }
        let q = |p| s.totals.quantile_us(m, p).map_or("-".to_string(), latency);
        let _ = write!(
            o,
            "<tr><td>{name}</td><td class=\"n\">{:.1}</td><td class=\"n\">{total}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            s.rates.get(m).copied().unwrap_or(0.0),
            q(0.5),
            q(0.9),
            q(0.99)
        );
    }
    let _ = write!(
        o,
        "</table><p class=\"muted\">latency percentiles are bucket upper bounds · {} connections open · \
         GET cache hits {} / misses {}</p>",
        s.totals.connections.max(0),
        s.totals.cache_hits,
        s.totals.cache_misses
    );
    let ix = &s.index;
    let _ = write!(
        o,
        "<h2>Index</h2><table><tr><th>live keys</th><td class=\"n\">{}</td></tr>\
         <tr><th>unlinked keys</th><td class=\"n\">{}</td></tr>\
         <tr><th>table files</th><td class=\"n\">{}</td></tr>\
         <tr><th>memtables</th><td class=\"n\">{}</td></tr>\
         <tr><th>pending compaction</th><td class=\"n\">{}</td></tr></table>\
         <p class=\"muted\">key counts are RocksDB's estimates</p>",
        ix.live_keys,
        ix.unlinked_keys,
        bytes(ix.sst_bytes),
        bytes(ix.memtable_bytes),
        bytes(ix.pending_compaction_bytes)
    );
    let _ = write!(
        o,
        "<h2>Last events</h2><table><tr><th>volume change</th><td>{}</td></tr><tr><th>scrub</th><td>{}</td></tr></table>\
         <p class=\"muted\">metrics for Prometheus at <a href=\"/metrics\">/metrics</a> · \
         load balancer check at <a href=\"/health\">/health</a></p></body></html>\n",
        s.last_rebalance.as_deref().map_or("none since start".to_string(), esc),
        s.last_scrub.as_deref().map_or("none since start".to_string(), esc),
    );
    o
}

/// Text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn latency(us: u64) -> String {
    match us {
        u64::MAX => "> 5 s".into(),
        us if us < 1_000 => format!("≤ {us} µs"),
        us if us < 1_000_000 => format!("≤ {} ms", us as f64 / 1000.0),
        us => format!("≤ {} s", us as f64 / 1e6),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}
