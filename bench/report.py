#!/usr/bin/python3
"""Turns the raw output of scripts/bench.sh into the results table (stdout)
and bench/results/<timestamp>.json. Standard library only.

Medians are over rounds (each round one wrk run per target). "added" =
byok - bare of the medians; ratios are byok / other.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys

TARGETS = {"throughput_ratio": 0.90, "added_p50_c1_us": 20, "cold_added_p50_us": 250,
           "projects_in_64mib": 100000}


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or \
            subprocess.run(cmd, capture_output=True, text=True, timeout=10).stderr.strip()
    except Exception:  # noqa: BLE001
        return None


def machine():
    model = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(open("/proc/meminfo").readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": model, "cpus": os.cpu_count(), "mem_mib": mem,
        "kernel": platform.release(), "os": sh("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "nginx": sh("/usr/sbin/nginx", "-v"), "redis": sh("redis-server", "--version"),
        "wrk": (sh("wrk", "-v") or "").splitlines()[0] if sh("wrk", "-v") else None,
        "node": sh("node", "--version"),
        "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
        "other_processes_note": "shared machine: other jobs (builds, tests) may run during the bench",
    }


def metrics(path):
    out = {}
    try:
        for line in open(path):
            if line.startswith("#") or not line.strip():
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line.strip())
            if m:
                key = m.group(1) + (m.group(2) or "")
                out[key] = float(m.group(3))
    except OSError:
        pass
    return out


def delta(a, b, name):
    return b.get(name, 0) - a.get(name, 0)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--projects", type=int)
    ap.add_argument("--keys", type=int)
    a = ap.parse_args()
    W = a.work
    clk = os.sysconf("SC_CLK_TCK")

    facts = {}
    for line in open(os.path.join(W, "facts.tsv")):
        k, _, v = line.rstrip("\n").partition("\t")
        facts[k] = v

    runs = []
    for line in open(os.path.join(W, "raw.jsonl")):
        r = json.loads(line)
        w = r.get("wrk")
        if w:
            secs = w["duration_us"] / 1e6
            r["cpu_us_per_req"] = round(r["cpu_ticks"] / clk * 1e6 / w["requests"], 2) if w["requests"] else None
            r["cpu_util"] = round(r["cpu_ticks"] / clk / secs, 3) if secs else None
            # Share of the proxies' CPU that other processes used during the run
            # (only meaningful when pinned; includes softirq work of any process).
            if "sut_cpu_busy_ticks" in r and secs:
                r["others_on_proxy_cpu"] = round(max(0, r["sut_cpu_busy_ticks"] - r["cpu_ticks"]) / clk / secs, 3)
            if "aux_cpu_busy_ticks" in r and secs:
                r["load_cpu_util"] = round(r["aux_cpu_busy_ticks"] / clk / secs, 3)
                if w["requests"]:
                    r["load_cpu_us_per_req"] = round(r["aux_cpu_busy_ticks"] / clk * 1e6 / w["requests"], 2)
            if "redis_cpu_ticks" in r and w["requests"]:
                r["redis_cpu_us_per_req"] = round(r["redis_cpu_ticks"] / clk * 1e6 / w["requests"], 2)
        runs.append(r)

    def sel(phase, target, conc):
        return [r for r in runs if r["phase"] == phase and r["target"] == target
                and r["conc"] == conc and r.get("wrk")]

    def agg(phase, target, conc):
        rs = sel(phase, target, conc)
        if not rs:
            return None
        w = [r["wrk"] for r in rs]
        return {
            "rounds": len(rs),
            "rps": round(med([x["rps"] for x in w]), 1),
            "rps_best": round(max(x["rps"] for x in w), 1),
            "others_on_proxy_cpu": med([r.get("others_on_proxy_cpu") for r in rs]),
            "p50_us": med([x["p50_us"] for x in w]),
            "p90_us": med([x["p90_us"] for x in w]),
            "p99_us": med([x["p99_us"] for x in w]),
            "p999_us": med([x["p999_us"] for x in w]),
            "max_us": max(x["lat_max_us"] for x in w),
            "non2xx": sum(x["err_status"] for x in w),
            "socket_errors": sum(x["err_connect"] + x["err_read"] + x["err_write"] + x["err_timeout"] for x in w),
            "cpu_us_per_req": med([r["cpu_us_per_req"] for r in rs]),
            "cpu_util": med([r["cpu_util"] for r in rs]),
            "load_cpu_util": med([r.get("load_cpu_util") for r in rs]),
            "load_cpu_us_per_req": med([r.get("load_cpu_us_per_req") for r in rs]),
            "redis_cpu_us_per_req": med([r.get("redis_cpu_us_per_req") for r in rs]),
            "upstream_conns_opened": med([r.get("upstream_accepts") for r in rs]),
            "per_round_rps": [round(x["rps"]) for x in w],
            "per_round_p50_us": [x["p50_us"] for x in w],
            "per_round_p99_us": [x["p99_us"] for x in w],
        }

    targets = ["bare", "byok"] + (["portkey"] if facts.get("portkey_status") == "ok" else [])
    res = {"throughput": {}, "latency_c1": {}}
    for conc in (32, 256):
        res["throughput"]["c%d" % conc] = {t: agg("tput", t, conc) for t in targets + ["noev"]}
    res["latency_c1"] = {t: agg("lat", t, 1) for t in targets}

    def ratio(x, y, key):
        return round(x[key] / y[key], 3) if x and y and y.get(key) else None

    def diff(x, y, key):
        return round(x[key] - y[key], 1) if x and y and x.get(key) is not None and y.get(key) is not None else None

    summary = {}
    for c in ("c32", "c256"):
        t = res["throughput"][c]
        summary["throughput_%s_byok_over_bare" % c] = ratio(t["byok"], t["bare"], "rps")
        summary["throughput_%s_byok_over_portkey" % c] = ratio(t["byok"], t.get("portkey"), "rps")
        summary["throughput_%s_best_round_byok_over_bare" % c] = ratio(t["byok"], t["bare"], "rps_best")
        summary["cpu_us_per_req_%s_added" % c] = diff(t["byok"], t["bare"], "cpu_us_per_req")
        # What byok/bare would be if the nginx worker were the only bottleneck:
        # the ratio of worker CPU per request. Robust to a busy load generator
        # or neighbours on the machine, which distort the req/s ratio.
        summary["cpu_bound_ratio_%s" % c] = ratio(t["bare"], t["byok"], "cpu_us_per_req")
        # byok_usage_events off (bench target "noev"): the share of the gap the
        # usage event stream makes on this machine (its Redis work shares the
        # load CPU with wrk and the upstream).
        summary["throughput_%s_events_off_over_bare" % c] = ratio(t.get("noev"), t["bare"], "rps")
    lat = res["latency_c1"]
    summary["added_p50_c1_us"] = diff(lat["byok"], lat["bare"], "p50_us")
    summary["added_p99_c1_us"] = diff(lat["byok"], lat["bare"], "p99_us")
    summary["p50_c1_byok_minus_portkey_us"] = diff(lat["byok"], lat.get("portkey"), "p50_us")

    # cold path
    cold = {"bare_same_script": agg("cold", "bare", 1), "byok_cold": agg("cold", "cold", 1)}
    hits = misses = stale = 0
    r = 1
    while os.path.exists(os.path.join(W, "metrics", "cold.r%d.before" % r)):
        m0 = metrics(os.path.join(W, "metrics", "cold.r%d.before" % r))
        m1 = metrics(os.path.join(W, "metrics", "cold.r%d.after" % r))
        hits += delta(m0, m1, "byok_cache_hits_total")
        misses += delta(m0, m1, "byok_cache_misses_total")
        stale += delta(m0, m1, "byok_cache_stale_total")
        r += 1
    lookups = hits + misses + stale
    cold["cache_hits"], cold["cache_misses"], cold["cache_stale"] = int(hits), int(misses), int(stale)
    cold["miss_ratio"] = round((misses + stale) / lookups, 4) if lookups else None
    res["cold_path_c1"] = cold
    summary["cold_added_p50_us"] = diff(cold["byok_cold"], cold["bare_same_script"], "p50_us")
    summary["cold_miss_ratio"] = cold["miss_ratio"]

    # Redis stall
    m0 = metrics(os.path.join(W, "metrics", "stall.before"))
    m1 = metrics(os.path.join(W, "metrics", "stall.after"))
    stall = {"normal": agg("nostall", "byok", 32), "stalled": agg("stall", "byok", 32),
             "bare_normal": agg("nostall", "bare", 32), "bare_stalled": agg("stall", "bare", 32),
             "debug_sleep_commands": int(facts.get("stall_commands", 0) or 0),
             "redis_errors_delta": int(delta(m0, m1, "byok_redis_errors_total")),
             "redis_reconnects_delta": int(delta(m0, m1, "byok_redis_reconnects_total")),
             "cache_misses_delta": int(delta(m0, m1, "byok_cache_misses_total"))}
    res["redis_stall_c32"] = stall
    summary["stall_p99_us"] = [stall["normal"] and stall["normal"]["p99_us"], stall["stalled"] and stall["stalled"]["p99_us"]]

    # SSE
    try:
        res["sse_ttfb"] = json.load(open(os.path.join(W, "sse.json")))
    except (OSError, ValueError):
        res["sse_ttfb"] = {}
    s = res["sse_ttfb"]
    if s.get("byok", {}).get("p50_us") and s.get("bare", {}).get("p50_us"):
        summary["sse_ttfb_added_p50_us"] = round(s["byok"]["p50_us"] - s["bare"]["p50_us"], 1)

    # sparse traffic
    try:
        res["paced_c1_10ms_gaps"] = json.load(open(os.path.join(W, "paced.json")))
    except (OSError, ValueError):
        res["paced_c1_10ms_gaps"] = {}
    pc = res["paced_c1_10ms_gaps"]
    if pc.get("byok", {}).get("p50_us") and pc.get("bare", {}).get("p50_us"):
        summary["paced_added_p50_us"] = round(pc["byok"]["p50_us"] - pc["bare"]["p50_us"], 1)

    # shm capacity
    ms = metrics(os.path.join(W, "metrics", "shm.after"))
    zone_mb = float(facts.get("shm_zone_mb", 8))
    entries = int(ms.get("byok_cache_entries", 0))
    inserted = int(ms.get("byok_cache_misses_total", 0) + ms.get("byok_cache_stale_total", 0))
    fill = agg("shmfill", "shm", 32)
    shm = {"zone_mib": zone_mb, "entries": entries, "lookups_that_inserted": inserted,
           "full": inserted > entries, "fill_run": fill,
           "entries_per_mib": round(entries / zone_mb, 1) if entries else None,
           "zone_bytes_per_entry": round(zone_mb * 1048576 / entries, 1) if entries else None,
           "extrapolated_entries_in_64mib": int(entries / zone_mb * 64) if entries else None,
           "note": "one entry per gateway key, each holding a real project snapshot with one "
                   "encrypted OpenAI record; a project with one gateway key = one entry"}
    if not shm["full"]:
        shm["note"] += "; the zone never filled, so the figures are lower bounds"
    res["shm_capacity"] = shm
    summary["projects_in_64mib_extrapolated"] = shm["extrapolated_entries_in_64mib"]

    res["worker_rss_kb"] = {k.split(".", 1)[1]: int(v) for k, v in facts.items() if k.startswith("rss_kb.")}
    res["upstream_connections_opened_in_warmup"] = {
        k.split(".", 1)[1]: {"accepts": int(v), "requests": (agg("warm", k.split(".", 1)[1], 32) or {}).get("rps")}
        for k, v in facts.items() if k.startswith("upstream_accepts.")}

    # bench/probe.sh (per-request counts) and BENCH_PERF=1 (top symbols)
    try:
        probe = json.load(open(os.path.join(W, "probe.json")))
    except (OSError, ValueError):
        probe = None
    if probe:
        for t in probe.values():
            if isinstance(t.get("top"), str):
                try:
                    t["top"] = json.loads(t["top"])
                except ValueError:
                    pass
    res["probe_per_hit_request"] = probe
    perf = {}
    for t in ("bare", "byok"):
        try:
            perf[t] = [l.rstrip() for l in open(os.path.join(W, "perf.%s.top" % t)) if l.strip()]
        except OSError:
            pass
    res["perf_top_symbols_c32"] = perf or None

    doc = {
        "schema": "byok-bench/1",
        "machine": machine(),
        "config": {"duration_s": a.duration, "rounds": a.rounds, "projects_admin_api": a.projects,
                   "gateway_keys_redis": a.keys, "worker_processes": 1, "wrk_threads": 1,
                   "pinning": facts.get("pinning"), "portkey": facts.get("portkey_status"),
                   "portkey_version": facts.get("portkey_version"),
                   "loadavg_at_start": facts.get("loadavg_start"),
                   "module": facts.get("module"),
                   "provision": json.loads(facts["provision"]) if facts.get("provision") else None},
        "targets": TARGETS,
        "summary": summary,
        "results": res,
        "runs": runs,
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(doc)


def fmt(v, nd=0):
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%." + str(nd) + "f") % v
    return str(v)


def print_table(doc):
    res, s, cfg = doc["results"], doc["summary"], doc["config"]
    pk = cfg["portkey"] == "ok"
    print()
    print("ngx_byok_module bench — %s, %s CPUs, %s; %s rounds x %ss, medians; 1 nginx worker, wrk -t1; %s"
          % (doc["machine"]["cpu"], doc["machine"]["cpus"], doc["machine"]["nginx"], cfg["rounds"],
             fmt(cfg["duration_s"]), cfg["pinning"]))
    print("peer: Portkey %s" % (cfg["portkey_version"] if pk else cfg["portkey"]))
    print()
    hdr = "%-34s %11s %11s %11s %12s %12s  %s" % ("metric", "bare", "byok", "portkey", "byok/bare",
                                                  "byok/portkey", "target")
    print(hdr)
    print("-" * len(hdr))

    def row(name, b, y, p, r1, r2, tgt=""):
        print("%-34s %11s %11s %11s %12s %12s  %s" % (name, b, y, p, r1, r2, tgt))

    for c in ("c32", "c256"):
        t = res["throughput"][c]
        g = lambda k, key, nd=0: fmt((t.get(k) or {}).get(key), nd)  # noqa: E731
        row("throughput %s (req/s)" % c, g("bare", "rps"), g("byok", "rps"), g("portkey", "rps"),
            fmt(s["throughput_%s_byok_over_bare" % c], 3), fmt(s["throughput_%s_byok_over_portkey" % c], 3),
            ">= 0.90 x bare")
        row("  best round (req/s) %s" % c, g("bare", "rps_best"), g("byok", "rps_best"), g("portkey", "rps_best"),
            fmt(s["throughput_%s_best_round_byok_over_bare" % c], 3), "", "")
        row("  worker CPU us/req %s" % c, g("bare", "cpu_us_per_req", 1), g("byok", "cpu_us_per_req", 1),
            g("portkey", "cpu_us_per_req", 1), "+" + fmt(s["cpu_us_per_req_%s_added" % c], 1) + " us", "",
            "CPU-bound ratio %s" % fmt(s["cpu_bound_ratio_%s" % c], 3))
        row("  worker CPU util %s" % c, g("bare", "cpu_util", 2), g("byok", "cpu_util", 2),
            g("portkey", "cpu_util", 2),
            "", "", "")
        row("  load CPU util %s" % c, g("bare", "load_cpu_util", 2), g("byok", "load_cpu_util", 2),
            g("portkey", "load_cpu_util", 2), "", "", "wrk + upstream + Redis core")
        row("  Redis CPU us/req %s" % c, g("bare", "redis_cpu_us_per_req", 2), g("byok", "redis_cpu_us_per_req", 2),
            g("portkey", "redis_cpu_us_per_req", 2), "", "", "on the load core")
        row("  load CPU us/req %s" % c, g("bare", "load_cpu_us_per_req", 1), g("byok", "load_cpu_us_per_req", 1),
            g("portkey", "load_cpu_us_per_req", 1), "", "", "wrk + upstream + Redis, per request")
        row("  byok, usage events off %s" % c, "", g("noev", "rps"), "",
            fmt(s["throughput_%s_events_off_over_bare" % c], 3), "",
            "req/s; worker %s us/req, load %s us/req (byok_usage_events off)"
            % (g("noev", "cpu_us_per_req", 1), g("noev", "load_cpu_us_per_req", 1)))
        row("  others' CPU on proxy core %s" % c, g("bare", "others_on_proxy_cpu", 2),
            g("byok", "others_on_proxy_cpu", 2), g("portkey", "others_on_proxy_cpu", 2), "", "",
            "noise: >0.1 = disturbed")
        row("  upstream conns opened/run %s" % c, g("bare", "upstream_conns_opened"),
            g("byok", "upstream_conns_opened"), g("portkey", "upstream_conns_opened"), "", "", "")
    lat = res["latency_c1"]
    g = lambda k, key: fmt((lat.get(k) or {}).get(key))  # noqa: E731
    row("latency c1 p50 (us)", g("bare", "p50_us"), g("byok", "p50_us"), g("portkey", "p50_us"),
        "+" + fmt(s["added_p50_c1_us"], 1) + " us", fmt(s["p50_c1_byok_minus_portkey_us"], 1) + " us",
        "<= +20 us")
    row("latency c1 p99 (us)", g("bare", "p99_us"), g("byok", "p99_us"), g("portkey", "p99_us"),
        "+" + fmt(s["added_p99_c1_us"], 1) + " us", "", "")
    row("throughput c1 (req/s)", g("bare", "rps"), g("byok", "rps"), g("portkey", "rps"), "", "", "")
    c = res["cold_path_c1"]
    row("cold path c1 p50 (us)", fmt((c["bare_same_script"] or {}).get("p50_us")),
        fmt((c["byok_cold"] or {}).get("p50_us")), "", "+" + fmt(s["cold_added_p50_us"], 1) + " us", "",
        "<= +250 us")
    row("cold path c1 p99 (us)", fmt((c["bare_same_script"] or {}).get("p99_us")),
        fmt((c["byok_cold"] or {}).get("p99_us")), "", "", "", "")
    row("  cache miss ratio (metrics)", "", fmt(c["miss_ratio"], 4), "",
        "%d miss/%d hit" % (c["cache_misses"] + c["cache_stale"], c["cache_hits"]), "", "")
    sse = res["sse_ttfb"]
    g = lambda k, key: fmt((sse.get(k) or {}).get(key))  # noqa: E731
    row("SSE first chunk p50 (us)", g("bare", "p50_us"), g("byok", "p50_us"), g("portkey", "p50_us"),
        "+" + fmt(s.get("sse_ttfb_added_p50_us"), 1) + " us", "", "")
    row("SSE first chunk p90 (us)", g("bare", "p90_us"), g("byok", "p90_us"), g("portkey", "p90_us"), "", "", "")
    for k, v in sorted(sse.items()):
        if v.get("errors"):
            print("  SSE %s: %d of %d samples failed; first: %s" % (k, v["errors"], v["errors"] + v["n"],
                                                                   v.get("first_error")))
    pc = res.get("paced_c1_10ms_gaps") or {}
    g = lambda k, key: fmt((pc.get(k) or {}).get(key))  # noqa: E731
    row("sparse c1, 10 ms gaps p50 (us)", g("bare", "p50_us"), g("byok", "p50_us"), g("portkey", "p50_us"),
        "+" + fmt(s.get("paced_added_p50_us"), 1) + " us", "", "")
    row("sparse c1, 10 ms gaps p99 (us)", g("bare", "p99_us"), g("byok", "p99_us"), g("portkey", "p99_us"), "", "", "")
    st = res["redis_stall_c32"]
    print()
    print("Redis stall (hot key, c32; DEBUG SLEEP 0.5 in a loop, %d commands during the byok runs; "
          "bare = control, it never talks to Redis):" % st["debug_sleep_commands"])
    for label, key in (("byok", "normal"), ("byok", "stalled"), ("bare", "bare_normal"), ("bare", "bare_stalled")):
        n = st.get(key) or {}
        print("  %-5s %-8s req/s %9s  p50 %7s us  p99 %7s us  p99.9 %7s us  max %8s us  non2xx %s  per-round p99 %s" %
              (label, key.replace("bare_", ""), fmt(n.get("rps")), fmt(n.get("p50_us")), fmt(n.get("p99_us")),
               fmt(n.get("p999_us")), fmt(n.get("max_us")), fmt(n.get("non2xx")), n.get("per_round_p99_us")))
    print("  redis errors +%d, reconnects +%d, cache misses +%d during the stall phase (target: same p99)"
          % (st["redis_errors_delta"], st["redis_reconnects_delta"], st["cache_misses_delta"]))
    sm = res["shm_capacity"]
    print()
    print("shm capacity: %s MiB zone holds %s entries (%s; %s lookups inserted) = %s per MiB, %s zone bytes/entry"
          % (fmt(sm["zone_mib"]), sm["entries"], "full, evicting" if sm["full"] else "NOT full",
             sm["lookups_that_inserted"], fmt(sm["entries_per_mib"], 1), fmt(sm["zone_bytes_per_entry"], 1)))
    print("  extrapolated to 64 MiB: %s projects (target >= 100000)" % fmt(sm["extrapolated_entries_in_64mib"]))
    print("worker RSS (kB): " + ", ".join("%s %s" % kv for kv in sorted(res["worker_rss_kb"].items()))
          + "  (shm = after filling the 8 MiB zone; portkey = whole node process)")
    ka = res["upstream_connections_opened_in_warmup"]
    print("upstream connections opened during 2 s c32 warm-up: " +
          ", ".join("%s %d" % (k, v["accepts"]) for k, v in sorted(ka.items())))
    print_probe(res.get("probe_per_hit_request"))
    print_perf(res.get("perf_top_symbols_c32"))
    bad = [(r["phase"], r["target"], r["conc"], r["round"]) for r in doc["runs"]
           if not r.get("wrk") or r["wrk"]["err_status"] or r["wrk"]["err_timeout"] or r["wrk"]["err_connect"]]
    if bad:
        print("WARNING: runs with errors or non-2xx answers: %s" % bad)
    print("load average at start: %s, at end: %s (on %s CPUs; anything above ~2 means other jobs competed for the CPUs)"
          % (cfg.get("loadavg_at_start"), " ".join(doc["machine"]["loadavg_at_end"]), doc["machine"]["cpus"]))


def side_by_side(title, left, right, width=60):
    print(title)
    print("  %-*s  %s" % (width, "bare", "byok"))
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print("  %-*s  %s" % (width, a[:width], b[:width]))


def print_probe(p):
    """The probe's load-independent counts per cache-hit request."""
    if not p:
        return
    print()
    g = lambda t, k: (p.get(t) or {}).get(k, "-")  # noqa: E731
    print("per cache-hit request (bench/probe.sh; load-independent):  %12s %12s" % ("bare", "byok"))
    for label, t, k in (("allocations (malloc calls)", "", "allocs_per_req"),
                        ("syscalls", "", "syscalls_per_req"),
                        ("instructions (callgrind)", "cg", "ir_per_req")):
        print("  %-56s %12s %12s" % (label, g(t + "bare", k), g(t + "byok", k)))
    if "cgbyok" in p:
        print("  metering: %s instructions per hit request, %s per relayed SSE chunk (filters), %s per chunk in all"
              % (g("cgbyok", "meter_ir_per_req"), g("cgbyok", "meter_ir_per_chunk"), g("cgbyok", "sse_ir_per_chunk")))
    for t in ("bare", "byok"):
        print("  syscalls %s: %s" % (t, g(t, "syscalls")))
    tops = [["%8.0f  %s" % (v, k) for k, v in ((p.get("cg" + t) or {}).get("top") or [])[:15]]
            for t in ("bare", "byok")]
    if any(tops):
        side_by_side("top symbols per hit request (callgrind, exclusive instructions):", tops[0], tops[1])


def print_perf(perf):
    if not perf:
        return
    print()
    side_by_side("perf top symbols, c32 hot key (share of samples; BENCH_PERF=1):",
                 [" ".join(l.split()) for l in perf.get("bare", [])],
                 [" ".join(l.split()) for l in perf.get("byok", [])])


if __name__ == "__main__":
    sys.exit(main())
