#!/usr/bin/env python3
"""Turns bench/run's raw results (one JSON object per measured run) into results.md
and a chart of the ratios.

  report.py results.jsonl meta.json results.md results.png
"""
import json
import os
import statistics
import sys


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, unit=""):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        s = f"{x:,.0f}"
    elif abs(x) >= 100:
        s = f"{x:.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s + unit


def listing(values):
    """The values formatted and comma-separated, as the tables and details list runs."""
    return ", ".join(fmt(v) for v in values)


def run_listing(pairs):
    """Runs as `rate (CPU)`, or the rate alone where no CPU was recorded."""
    return ", ".join(fmt(v) + (f" ({fmt(c)})" if c is not None else "") for v, c in pairs)


# scenario key, label, unit, reference, target (op, value) on the row's measure (the ratio,
# or the mkv figure itself for ABSOLUTE rows), target on the CPU ratio
ROWS = [
    ("get_hit", "GET hit → 302 ({keys} keys)", "req/s", "nginx `return 302`", (">=", 1.0), ("<=", 0.85)),
    ("get_miss", "GET miss → 404", "req/s", "nginx `return 302`", (">=", 1.05), None),
    ("get_hit_3m", "GET hit → 302 over {many} keys", "req/s",
     "the same master over {keys} keys", (">=", 0.85), ("<=", 1.2)),
    ("put", "PUT fresh 1 KiB key, 3 replicas", "req/s", "direct PUT to the 3 volumes ÷ 3", (">=", 0.7), None),
    ("put_master_cpu", "PUT: master CPU per PUT", "µs", "—", ("<=", 50), None),
    ("put_volume_cpu", "PUT: volumes' CPU per replica write", "µs", "per direct PUT", ("<=", 1.15), None),
    ("put_sync", "PUT fresh 1 KiB key, master with `-sync`", "req/s", "the same PUT, master without `-sync`", None, None),
    ("s3_put", "S3 PutObject 1 KiB, 3 replicas", "req/s", "native PUT of the same bodies", (">=", 0.9), None),
    ("cycle", "PUT→GET(follow)→DELETE, 16 clients", "cycles/s", "same cycle direct on one volume", None, None),
    ("s3_get", "S3 GetObject {obj} through the master", "MiB/s", "GET of the same files from one nginx volume",
     (">=", 0.8), None),
    ("big", "one {big} PUT, 3 replicas", "MiB/s", "3 parallel direct PUTs (curl -T)", (">=", 0.8), None),
    ("big_nomd5", "one {big} PUT, 3 replicas, master with `-md5sum=false`", "MiB/s",
     "3 parallel direct PUTs (curl -T)", None, None),
    ("rss", "master peak RSS (VmHWM) in the {big} PUT", "MiB", "—", ("<", 64), None),
    ("multipart", "{big} multipart upload (boto3, {part} MiB parts)", "MiB/s", "native {big} PUT (curl -T) through the master",
     (">=", 0.7), None),
    ("multipart_rss", "master peak RSS (VmHWM) in the multipart upload", "MiB", "—", ("<", 64), None),
    ("lat_p50", "GET hit p50 at ~½ saturated rate", "ms", "nginx `return 302` at the same load", None, None),
    ("lat_p99", "GET hit p99 at ~½ saturated rate", "ms", "nginx `return 302` at the same load", ("<", 2.0), None),
]
# rows whose target holds the mkv figure itself, not the ratio
ABSOLUTE = ("rss", "multipart_rss", "lat_p99", "put_master_cpu")
# rows of one whole PUT: their CPU is in seconds per PUT, not µs per request
WHOLE = ("big", "big_nomd5", "multipart")
SETTINGS = {}


# reference sides served by a master too (mkv compared with itself), and by the reference nginx
MASTER_REFS = ("get_hit_3m", "put_sync", "s3_put", "multipart")
NGINX_REFS = ("get_hit", "get_miss", "latency")


def server_cpu(r):
    """Seconds of CPU the processes serving run r used (None for rows from before CPU was
    recorded): the volumes and the master on mkv's side; on the reference's, the volumes and
    the reference nginx or the master where they serve it. An idle master's own background
    work (RocksDB flushing what mkv's run wrote) is not the reference's."""
    c = r.get("cpu")
    if c is None:
        return None
    if r["side"] != "ref" or r["scenario"] in MASTER_REFS:
        return c["master_s"] + c["volumes_s"]
    return c["volumes_s"] + (c["ref_s"] if r["scenario"] in NGINX_REFS else 0)


def per(seconds, n, scale=1e6):
    return None if seconds is None or not n else seconds * scale / n


def values(runs, scenario, side):
    """Per round: {round: (value, server CPU per request or None)} for one row."""
    out = {}
    src = {"big_nomd5": "big", "rss": "big", "multipart_rss": "multipart", "lat_p50": "latency",
           "lat_p99": "latency", "put_master_cpu": "put", "put_volume_cpu": "put"}.get(scenario, scenario)
    if scenario == "big_nomd5":  # the same reference as the big row, mkv's runs without MD5
        side = "mkv_nomd5" if side == "mkv" else side
    for r in runs:
        if r["scenario"] != src or r["side"] != side:
            continue
        rd, w = r["round"], r.get("wrk")
        if scenario in ("get_hit", "get_miss", "get_hit_3m", "put", "put_sync", "s3_put"):
            v, cpu = w["rps"], per(server_cpu(r), w["requests"])
            if scenario == "put" and side == "ref":  # per replicated write: three direct PUTs
                v, cpu = v / 3, per(server_cpu(r), w["requests"] / 3)
            out[rd] = (v, cpu)
        elif scenario == "s3_get":
            out[rd] = (w["rps"] * SETTINGS.get("S3_OBJ_KIB", 1024) / 1024, per(server_cpu(r), w["requests"]))
        elif scenario == "put_master_cpu" and side == "mkv" and "cpu" in r:
            out[rd] = (per(r["cpu"]["master_s"], w["requests"]), None)
        elif scenario == "put_volume_cpu" and "cpu" in r:
            out[rd] = (per(r["cpu"]["volumes_s"], w["requests"] * (3 if side == "mkv" else 1)), None)
        elif scenario == "cycle":
            out[rd] = (r["cycle"]["per_s"], per(server_cpu(r), r["cycle"].get("cycles")))
        elif scenario in WHOLE:
            out[rd] = (r["mib"] / float(r["seconds"]), server_cpu(r))
        elif scenario in ("rss", "multipart_rss") and side == "mkv":
            out[rd] = (r["vmhwm_kib"] / 1024, None)
        elif scenario in ("lat_p50", "lat_p99"):
            out[rd] = (w["p50_us" if scenario == "lat_p50" else "p99_us"] / 1000, per(server_cpu(r), w["requests"]))
    return out


OPS = {">=": ("≥", lambda a, b: a >= b), "<=": ("≤", lambda a, b: a <= b), "<": ("<", lambda a, b: a < b)}


def check(target, measured):
    if target is None or measured is None:
        return "", ""
    op, v = target
    sign, ok = OPS[op]
    return f"{sign} {v:g}", "yes" if ok(measured, v) else "**no**"


def anomalies(runs):
    notes = []
    for r in runs:
        w = r.get("wrk")
        tag = f"{r['scenario']} {r['side']} round {r['round']}"
        if w:
            errs = {k: w[k] for k in ("err_connect", "err_read", "err_write", "err_timeout") if w[k]}
            if errs:
                notes.append(f"{tag}: wrk socket errors {errs} in {w['requests']} requests")
            expected_status = w["requests"] if (r["scenario"] == "get_miss" and r["side"] == "mkv") else 0
            if w["err_status"] != expected_status:
                what = "404s" if expected_status else "answers that were not 2xx/3xx"
                notes.append(f"{tag}: {w['err_status']} {what} in {w['requests']} requests"
                             + (f" (all {w['requests']} should be 404)" if expected_status else ""))
        c = r.get("cycle")
        if c and c["errors"]:
            notes.append(f"{tag}: {c['errors']} failed cycles, first: {c['first_error']}")
    return notes


def main():
    res_path, meta_path, md_path, png_path = sys.argv[1:5]
    runs = [json.loads(l) for l in open(res_path) if l.strip()]
    meta = json.load(open(meta_path))
    SETTINGS.update(meta["settings"])
    rows = []
    st = meta["settings"]
    count = lambda n: f"{n // 1000000}M" if n % 1000000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    size = lambda mib: "1 GiB" if mib == 1024 else f"{mib} MiB"
    names = dict(keys=count(st.get("KEYS", 0)), many=count(st.get("MANY_KEYS", 0)), big=size(st.get("BIG_MIB", 1024)),
                 part=st.get("PART_MIB", 8), obj=size(st.get("S3_OBJ_KIB", 1024) / 1024).replace(".0 ", " "))
    for key, label, unit, ref_label, target, cpu_target in ROWS:
        label, ref_label = label.format(**names), ref_label.format(**names)
        mk, rf = values(runs, key, "mkv"), values(runs, key, "ref")
        if not mk:
            continue
        m = {k: v for k, (v, _) in mk.items()}
        f = {k: v for k, (v, _) in rf.items()}
        mc = {k: c for k, (_, c) in mk.items() if c is not None}
        fc = {k: c for k, (_, c) in rf.items() if c is not None}
        m_med, r_med = med(list(m.values())), med(list(f.values()))
        if key in ("rss", "multipart_rss"):  # a peak must hold in every run: the worst one counts
            m_med = max(m.values())
        paired = [m[k] / f[k] for k in sorted(m) if k in f and f[k]]
        ratio = med(paired)
        cpu_ratio = med([mc[k] / fc[k] for k in sorted(mc) if k in fc and fc[k]])
        tgt, met = check(target, m_med if key in ABSOLUTE else ratio)
        rate_target, rate_met = target[1] if target else None, met
        ctgt, cmet = check(cpu_target, cpu_ratio)
        if ctgt:
            tgt, met = f"{tgt}; CPU {ctgt}×", f"{met}; CPU {cmet}"
        rows.append(dict(key=key, label=label, unit=unit, ref_label=ref_label, mkv=m_med, ref=r_med,
                         ratio=ratio, ratios=paired, target=tgt, met=met, rate_target=rate_target, rate_met=rate_met,
                         cpu_unit="s" if key in WHOLE else "µs", mkv_cpu=med(list(mc.values())),
                         ref_cpu=med(list(fc.values())), cpu_ratio=cpu_ratio,
                         mkv_runs=[(m[k], mc.get(k)) for k in sorted(m)], ref_runs=[(f[k], fc.get(k)) for k in sorted(f)]))

    s = meta["settings"]
    lines = [
        "# mkv benchmark results",
        "",
        "Made by `bench/run` (see [README.md](README.md) for what each scenario measures and",
        "which bound each reference stands for). Medians of alternated runs; the ratio is the",
        "median of the per-round ratios mkv ÷ reference (each round runs both, back to back).",
        "For latency, RSS and CPU lower is better; for everything else higher is better. The RSS",
        "rows show the worst run, not the median: a memory bound has to hold every time.",
        "",
        "**CPU** is the server side's CPU time (utime + stime from `/proc`; nginx with its workers)",
        "per request as the rate counts them (the PUT reference: per three direct PUTs; a whole PUT:",
        "seconds), median of the runs: on mkv's side the master's and the volumes'; on the",
        "reference's the volumes' and the reference nginx's, or the master's where the reference is",
        "mkv itself. wrk and the other clients are not counted. CPU per request moves far less",
        "between rounds than the rates on these shared cores. Runs are listed as `rate (CPU)`.",
        "",
        "![ratios](results.png)",
        "",
        "| scenario | unit | mkv | reference | ratio | CPU mkv | CPU reference | CPU ratio | target | met "
        "| mkv runs | reference runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    ratio_text = lambda x: format(x, ".3f") + "×" if x is not None else "—"
    for r in rows:
        ref = f"{fmt(r['ref'])} ({r['ref_label']})" if r["ref"] is not None else "—"
        cu = " " + r["cpu_unit"]
        lines.append(
            f"| {r['label']} | {r['unit']} | {fmt(r['mkv'])} | {ref} | {ratio_text(r['ratio'])} | "
            f"{fmt(r['mkv_cpu'], cu)} | {fmt(r['ref_cpu'], cu)} | {ratio_text(r['cpu_ratio'])} | "
            f"{r['target']} | {r['met']} | {run_listing(r['mkv_runs'])} | {run_listing(r['ref_runs']) or '—'} |")
    # context a reader needs to interpret the rows
    lines += ["", "Details:", ""]
    put_ref = [x["wrk"]["rps"] for x in runs if x["scenario"] == "put" and x["side"] == "ref"]
    if put_ref:
        lines.append(f"- PUT reference: the volumes took {listing(put_ref)} direct "
                     f"1 KiB PUTs/s (median {fmt(med(put_ref))}); a replicated write costs three of those, "
                     f"so the ceiling for mkv is that ÷ 3 = {fmt(med(put_ref) / 3)} PUTs/s.")

    def split(scenario, side, field, replicas=1):
        """Median µs per request of one part of the server side (master_s, volumes_s, ref_s)."""
        return fmt(med([per(x["cpu"][field], x["wrk"]["requests"] * replicas) for x in runs
                        if x["scenario"] == scenario and x["side"] == side and "cpu" in x]), " µs")

    if any(x["scenario"] == "get_hit_3m" for x in runs):
        lines.append(f"- GET hit over {names['many']} keys: two masters beside the main one, same binary and flags, "
                     f"over indexes written by `mkv bench-index` ({names['many']} and {names['keys']} records "
                     f"`/bench/k…` placed on these volumes): only the key count differs. Master CPU per GET "
                     f"{split('get_hit_3m', 'mkv', 'master_s')} vs {split('get_hit_3m', 'ref', 'master_s')}.")
    if any(x["scenario"] == "put" and "cpu" in x for x in runs):
        lines.append(f"- PUT CPU: master {split('put', 'mkv', 'master_s')} per PUT; volumes "
                     f"{split('put', 'mkv', 'volumes_s')} per PUT through mkv ({split('put', 'mkv', 'volumes_s', 3)} "
                     f"per replica write), {split('put', 'ref', 'volumes_s')} per direct PUT.")
    if any(x["scenario"] == "put_sync" for x in runs):
        lines.append(f"- PUT with `-sync`: each side a master of its own on a fresh index. Master CPU per PUT "
                     f"{split('put_sync', 'mkv', 'master_s')} with `-sync`, {split('put_sync', 'ref', 'master_s')} "
                     f"without; volumes {split('put_sync', 'mkv', 'volumes_s')} and "
                     f"{split('put_sync', 'ref', 'volumes_s')}. An fsync costs what the index's filesystem "
                     f"makes it cost (below).")
    if any(x["scenario"] == "s3_put" for x in runs):
        lines.append(f"- S3 PutObject vs native PUT through the same master: master CPU per PUT "
                     f"{split('s3_put', 'mkv', 'master_s')} vs {split('s3_put', 'ref', 'master_s')}; volumes "
                     f"{split('s3_put', 'mkv', 'volumes_s')} vs {split('s3_put', 'ref', 'volumes_s')}.")
    if any(x["scenario"] == "s3_get" for x in runs):
        lines.append(f"- S3 GetObject: {st.get('S3_OBJECTS', '?')} objects of {names['obj']}, {st.get('S3_CONNS', '?')} "
                     f"connections on both sides. Through mkv: master {split('s3_get', 'mkv', 'master_s')} + volumes "
                     f"{split('s3_get', 'mkv', 'volumes_s')} per GET; straight from the volume: "
                     f"{split('s3_get', 'ref', 'volumes_s')}.")
    mp = [x for x in runs if x["scenario"] == "multipart" and x["side"] == "mkv"]
    if mp:
        mr = [x for x in runs if x["scenario"] == "multipart" and x["side"] == "ref"]
        lines.append(f"- Multipart: boto3's upload_file ({mp[0]['upload']['part_mib']} MiB parts, "
                     f"{mp[0]['upload']['threads']} in flight) took {listing(float(x['seconds']) for x in mp)} s; the "
                     f"native PUT of the same file {listing(float(x['seconds']) for x in mr)} s; each through a master "
                     f"restarted before it, its VmHWM reset once listening.")
        if all("complete_seconds" in x["upload"] for x in mp):
            lines.append(f"  Of the multipart upload, the parts took {listing(float(x['upload']['parts_seconds']) for x in mp)} s "
                         f"and CompleteMultipartUpload {listing(float(x['upload']['complete_seconds']) for x in mp)} s.")

    lat = [x for x in runs if x["scenario"] == "latency"]
    if lat:
        l0 = lat[0]
        lm = [x["wrk"]["rps"] for x in lat if x["side"] == "mkv"]
        lr = [x["wrk"]["rps"] for x in lat if x["side"] == "ref"]
        lines.append(f"- Latency: mkv's saturated GET-hit rate was {fmt(l0['saturated_rps'])} req/s; the load was held "
                     f"near half ({fmt(l0['target_rps'])}) by {l0['conns']} connections each pausing "
                     f"{l0['delay_ms']} ms between requests. Achieved: mkv {listing(lm)} req/s, "
                     f"nginx {listing(lr)} req/s.")
        ref_p99 = med([x["wrk"]["p99_us"] / 1000 for x in lat if x["side"] == "ref"])
        if ref_p99 is not None and ref_p99 >= 2.0:
            lines.append(f"- The reference nginx's own GET p99 at that load was {fmt(ref_p99)} ms, over the 2 ms "
                         f"target as well: the tail in this run is the machine's (other work on the cores), "
                         f"not something mkv alone adds.")
        p999 = [x["wrk"]["p999_us"] / 1000 for x in lat if x["side"] == "mkv"]
        lines.append(f"- mkv GET p99.9 at that load: {listing(p999)} ms.")
    big = [x for x in runs if x["scenario"] == "big" and x["side"] == "mkv"]
    if big:
        lines.append(f"- The {big[0]['mib']} MiB PUT through mkv took {listing(float(x['seconds']) for x in big)} s; "
                     f"the master was restarted before each and its VmHWM reset once listening, so the RSS row is that PUT's peak.")
        if all("vmrss_start_kib" in x for x in big):
            lines.append(f"- Master RSS once listening, before the big PUT: "
                         f"{listing(x['vmrss_start_kib'] / 1024 for x in big)} MiB; after the PUT: "
                         f"{listing(x['vmrss_kib'] / 1024 for x in big)} MiB.")
        if all("vmhwm_startup_kib" in x for x in big):
            lines.append(f"- Master peak RSS of start-up alone (RocksDB open and log replay; reset before the PUT): "
                         f"{listing(x['vmhwm_startup_kib'] / 1024 for x in big)} MiB.")
    rs = [x for x in runs if x["scenario"] == "restart"]
    if rs:
        lines.append(f"- The restart before the big PUTs, replaying the log of everything written before: master "
                     f"peak RSS {fmt(rs[0]['vmhwm_kib'] / 1024)} MiB, {fmt(rs[0]['vmrss_kib'] / 1024)} MiB 2 s later "
                     f"(not part of any PUT's peak).")
    load = [x for x in runs if x["scenario"] == "load"]
    if load:
        l = load[0]["load"]
        lines.append(f"- Preload: {l['ok']} keys PUT through mkv in {l['seconds']} s ({fmt(l['per_s'])}/s, "
                     f"16 Python clients), {load[0]['listed']} listed afterwards.")
    notes = anomalies(runs)
    lines += ["", "Anomalies seen in the runs: " + ("none." if not notes else "")]
    lines += [f"- {n}" for n in notes]
    lines += [
        "",
        "## Machine",
        "",
        f"- date: {meta['date']}",
        f"- commit: `{meta['commit']}`",
        f"- CPU: {meta['cpu']}, nproc {meta['nproc']}, memory {meta['mem']}",
        f"- kernel: {meta['kernel']}",
        f"- {meta['nginx']}, {meta['wrk']}; load average (1/5/15 min) at the start: "
        f"{meta.get('loadavg_start', '?')}, at the end: {meta['loadavg_end']}",
        f"- settings: " + ", ".join(f"{k}={v}" for k, v in s.items()),
        f"- volumes' and index's filesystem: {meta.get('datafs', '?')}",
        "- wrk, the volumes, the reference nginx and the master all share these cores.",
    ]
    if meta.get("note"):
        lines += [f"- {meta['note']}"]
    lines += [""]
    # keep the sections other scripts own (bench/rebuild writes "## rebuild", "## rebalance",
    # bench/verify "## verify")
    import os, re
    kept = ""
    if os.path.exists(md_path):
        old = open(md_path).read()
        for name in ("rebuild", "rebalance", "verify"):
            m = re.search(r"^## " + name + r"\n.*?(?=^## |\Z)", old, flags=re.S | re.M)
            if m:
                kept += "\n" + m.group(0).rstrip() + "\n"
    open(md_path, "w").write("\n".join(lines) + kept)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is missing, no chart (apt-get install -y python3-matplotlib)", file=sys.stderr)
        return
    bars = [r for r in rows if r["unit"] in ("req/s", "cycles/s", "MiB/s")]
    lat = {r["key"]: r for r in rows if r["key"] in ("lat_p50", "lat_p99")}
    fig, axes = plt.subplots(1, 2, figsize=(12, max(4.6, 1.5 + 0.6 * len(bars))),
                             gridspec_kw={"width_ratios": [2.2, 1]})
    ax = axes[0]
    ys = list(range(len(bars)))[::-1]
    # CPU ratios far off the scale (a cycle's ~5×) would squash the bars: drawn at the edge
    cap = 3.0
    for y, r in zip(ys, bars):
        color = {"yes": "#4c9a2a", "**no**": "#c0392b"}.get(r["rate_met"], "#7f8c9a")
        ax.barh(y, r["ratio"] or 0, color=color, alpha=0.8)
        ax.scatter(r["ratios"], [y] * len(r["ratios"]), color="black", s=12, zorder=3)
        t = r["rate_target"]
        if t is not None:
            ax.plot([t, t], [y - 0.4, y + 0.4], color="black", linestyle="--", linewidth=1.5)
        c = r["cpu_ratio"]
        if c is not None:
            ax.scatter([min(c, cap)], [y], marker="D" if c <= cap else ">", facecolors="none",
                       edgecolors="#2c3e50", s=40, zorder=4)
    ax.axvline(1.0, color="gray", linewidth=0.8)
    ax.set_xlim(0, max([cap * 1.03] + [max([r["ratio"] or 0] + r["ratios"]) * 1.05 for r in bars]))
    ax.set_yticks(ys)
    ratio = lambda x: f"{x:.3f}×" if x is not None else "—"
    ax.set_yticklabels([f"{r['label']}\nvs {r['ref_label']}\n".replace("`", "")
                        + f"rate {ratio(r['ratio'])}" + (f", CPU {ratio(r['cpu_ratio'])}" if r["cpu_ratio"] else "")
                        for r in bars], fontsize=8)
    ax.set_xlabel("mkv ÷ reference (bar: median rate ratio; dots: rounds; dashed: target; green/red: target "
                  f"met/missed;\n◇: server CPU per request ratio, lower is better; ▷: beyond {cap:g}×)")
    ax.set_title("throughput ratios")
    ax = axes[1]
    if lat:
        names = ["p50", "p99"]
        mk = [lat[k]["mkv"] if k in lat else 0 for k in ("lat_p50", "lat_p99")]
        rf = [lat[k]["ref"] or 0 if k in lat else 0 for k in ("lat_p50", "lat_p99")]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], mk, width=0.4, label="mkv", color="#2c7fb8")
        ax.bar([x + 0.2 for x in xs], rf, width=0.4, label="nginx return 302", color="#aaaaaa")
        for x, v in zip(xs, mk):
            ax.text(x - 0.2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(2.0, color="black", linestyle="--", linewidth=1, label="p99 target 2 ms")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names)
        ax.set_ylabel("ms")
        ax.set_title("GET latency, ~½ saturation")
        ax.set_ylim(0, max([2.0] + mk + rf) * 1.25)
        ax.legend(fontsize=8, loc="upper left")
    rss = next((r for r in rows if r["key"] == "rss"), None)
    sub = f"{meta['date']} · {meta['commit']} · {meta['nproc']} cores, {meta['cpu']}"
    if rss:
        sub += f"\nmaster peak RSS in the big PUT: {rss['mkv']:.1f} MiB (target < 64 MiB)"
    mrss = next((r for r in rows if r["key"] == "multipart_rss"), None)
    if mrss:
        sub += f"{',' if rss else chr(10) + 'master peak RSS'} in the multipart upload: {mrss['mkv']:.1f} MiB"
    fig.suptitle("mkv vs its references on one machine — " + sub, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main()
