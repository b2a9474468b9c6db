//! The status page: one plain HTML page (no script) an operator opens on the admin port:
//! volumes and their health, request rates, latency percentiles, key counts, last events.

use std::fmt::Write as _;

use super::Snapshot;
use crate::metrics::METHODS;

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;padding:0 2em;color:#1f2328;max-width:64em}\
h1{font-size:1.5em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.8em 0 .4em}\
.state{padding:.7em 1em;border-radius:6px;border-left:6px solid}\
.state b{font-size:1.15em;margin-right:.6em}\
.state.ok{background:#e9f6ec;border-color:#1a7f37} .state.warn{background:#fff5d6;border-color:#bf8700}\
.state.bad{background:#fdecea;border-color:#cf222e}\
table{border-collapse:collapse} td,th{padding:.3em 1em;border-bottom:1px solid #d8dee4;text-align:left}\
th{font-weight:600;color:#57606a;border-bottom-width:2px} td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.down td{background:#fdecea}\
.badge{display:inline-block;min-width:3.2em;text-align:center;padding:0 .5em;border-radius:1em;font-weight:600;color:#fff}\
.badge.ok{background:#1a7f37} .badge.bad{background:#cf222e} td.bad{color:#cf222e;font-weight:600}\
.muted{color:#57606a} p.muted{font-size:.9em;margin:.4em 0}";

pub fn status_page(s: &Snapshot) -> String {
    let mut o = String::with_capacity(8 << 10);
    let (n, up) = (s.volumes.len(), s.volumes.iter().filter(|v| v.up).count());
    // as /health decides: writes need -replicas volumes up among those new keys go to
    let placed = s.volumes.iter().filter(|v| v.placed).count();
    let placed_up = s.volumes.iter().filter(|v| v.placed && v.up).count();
    let (state, class, why) = if s.stopping {
        ("stopping", "warn", "finishing the requests in flight, then exiting".to_string())
    } else if let Some(problem) = &s.index_problem {
        ("index failing", "bad", esc(problem).to_string())
    } else if placed_up < s.replicas {
        (
            "writes failing",
            "bad",
            format!("only {placed_up} of {placed} volumes up, {} replicas needed: every PUT fails", s.replicas),
        )
    } else if up < n {
        let down = n - up;
        let (what, verb) =
            if down == 1 { ("1 volume is".to_string(), "it is") } else { (format!("{down} volumes are"), "they are") };
        (
            "degraded",
            "warn",
            format!(
                "{what} down: GETs go to other replicas; writes of keys with a replica there fail until {verb} back"
            ),
        )
    } else {
        ("healthy", "ok", format!("all {n} volumes up"))
    };
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>mkv: {state}</title><style>{STYLE}</style></head><body><h1>mkv</h1>\
         <p class=\"muted\">version {} · started {} ago · {} replicas per key · this page refreshes every 5 s</p>\
         <p class=\"state {class}\"><b>{state}</b>{why}</p>",
        esc(s.version),
        duration(s.uptime_secs),
        s.replicas,
    );

    o.push_str("<h2>Volumes</h2><table><tr><th>volume</th><th>state</th><th class=\"n\">failed requests</th></tr>");
    for v in &s.volumes {
        let _ = write!(
            o,
            "<tr{}><td>{}{}</td><td><span class=\"badge {}\">{}</span></td><td class=\"n\">{}</td></tr>",
            if v.up { "" } else { " class=\"down\"" },
            esc(&v.name),
            if v.placed { "" } else { " <span class=\"muted\">(old records only: new keys go elsewhere)</span>" },
            if v.up { "ok" } else { "bad" },
            if v.up { "up" } else { "down" },
            count(v.errors),
        );
    }
    o.push_str("</table><p class=\"muted\">failed requests: since start, by this master</p>");

    o.push_str(
        "<h2>Requests</h2><table><tr><th>method</th><th class=\"n\">per second</th><th class=\"n\">total</th>\
         <th class=\"n\">5xx</th><th class=\"n\">p50</th><th class=\"n\">p90</th><th class=\"n\">p99</th></tr>",
    );
    let mut any = false;
    for (m, name) in METHODS.iter().enumerate() {
        let total: u64 = s.totals.requests.iter().filter(|r| r.0 == m).map(|r| r.2).sum();
        if total == 0 {
            continue;
        }
        any = true;
        let failed: u64 = s.totals.requests.iter().filter(|r| r.0 == m && r.1 >= 500).map(|r| r.2).sum();
        let rate = s.rates.as_ref().and_then(|r| r.get(m)).map_or("–".to_string(), |r| format!("{r:.1}"));
        let q = |p| s.totals.quantile_us(m, p).map_or("–".to_string(), latency);
        let _ = write!(
            o,
            "<tr><td>{name}</td><td class=\"n\">{rate}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            count(total),
            if failed > 0 { " bad" } else { "" },
            count(failed),
            q(0.5),
            q(0.9),
            q(0.99)
        );
    }
    if !any {
        o.push_str("<tr><td colspan=\"7\" class=\"muted\">no requests yet</td></tr>");
    }
    let (hits, misses) = (s.totals.cache_hits, s.totals.cache_misses);
    let _ = write!(
        o,
        "</table><p class=\"muted\">per second: over the last minute · p50/p90/p99: latency, as the upper bound \
         of its histogram bucket · ADMIN: admin methods and this port<br>connections open now: {} · GET cache: {}</p>",
        s.totals.connections.max(0),
        match hits + misses {
            0 => "not used yet".to_string(),
            all => format!("{}% of {} answered from it", hits * 100 / all, count(all)),
        }
    );

    let ix = &s.index;
    let _ = write!(
        o,
        "<h2>Index</h2><table><tr><td>live keys</td><td class=\"n\">{}</td></tr>\
         <tr><td>unlinked keys</td><td class=\"n\">{}</td></tr>\
         <tr><td>table files</td><td class=\"n\">{}</td></tr>\
         <tr><td>memtables</td><td class=\"n\">{}</td></tr>\
         <tr><td>pending compaction</td><td class=\"n\">{}</td></tr></table>",
        count(ix.live_keys),
        count(ix.unlinked_keys),
        bytes(ix.sst_bytes),
        bytes(ix.memtable_bytes),
        bytes(ix.pending_compaction_bytes)
    );

    let _ = write!(
        o,
        "<h2>Last events</h2><p>volume change: {}</p>",
        s.last_rebalance.as_deref().map_or("none since start".to_string(), esc)
    );
    if let Some(scrub) = &s.scrub {
        // the line names itself ("scrub: …")
        let _ = write!(o, "<p>{}</p>", esc(&scrub.line));
    }
    o.push_str(
        "<p class=\"muted\">for Prometheus: <a href=\"/metrics\">/metrics</a> · \
         for load balancers: <a href=\"/health\">/health</a> (200 while writes can succeed, else 503)</p></body></html>\n",
    );
    o
}

/// Text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A count with its thousands apart (`1 234 567`, narrow no-break spaces).
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 2);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(d);
    }
    out
}

fn latency(us: u64) -> String {
    match us {
        u64::MAX => "> 5 s".into(),
        us if us < 1_000 => format!("{us} µs"),
        us if us < 1_000_000 => format!("{} ms", us as f64 / 1000.0),
        us => format!("{} s", us as f64 / 1e6),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admin::VolumeState, index::Stats, metrics::Registry};

    fn page(up: [bool; 3], replicas: usize) -> String {
        let volumes = up
            .iter()
            .enumerate()
            .map(|(i, &up)| VolumeState { name: format!("v{i}:80"), up, takes_writes: up, errors: 0, placed: true })
            .collect();
        let totals = Registry::default().totals();
        let index = Stats::default();
        let s = Snapshot {
            totals,
            volumes,
            index,
            replicas,
            uptime_secs: 5,
            version: "0.1.0",
            stopping: false,
            index_problem: None,
            rates: None,
            last_rebalance: None,
            scrub: None,
        };
        status_page(&s)
    }

    #[test]
    fn the_state_says_what_fails() {
        assert!(page([true; 3], 2).contains("<b>healthy</b>all 3 volumes up"));
        let one_down = page([true, false, true], 2);
        assert!(one_down.contains("<title>mkv: degraded</title>"), "{one_down}");
        assert!(one_down.contains("<tr class=\"down\"><td>v1:80</td><td><span class=\"badge bad\">down</span>"));
        assert!(page([true, false, false], 2).contains("<b>writes failing</b>only 1 of 3 volumes up, 2 replicas"));
        assert!(page([true; 3], 2).contains("no requests yet"));
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1\u{202f}000");
        assert_eq!(count(1_234_567), "1\u{202f}234\u{202f}567");
    }
}
