#!/usr/bin/python3
"""Reads the callgrind dumps of bench/probe.sh and prints probe.tsv rows.

    probe_cg.py DIR N

DIR holds cgbare.<pid>.1 (N hit requests), cgbyok.<pid>.1 (N hit requests)
and cgbyok.<pid>.2 (N SSE streams; DIR/sse.json has the chunk count).
Rows: ir_per_req, top (JSON [[symbol, Ir per request], ...], exclusive),
and for byok meter_ir_per_req / meter_ir_per_chunk: instructions spent in
the metering glue (ngx_byok_metering.cpp: its filters, log handler and what
they call) minus the next filters of nginx's chain they hand over to.
"""
import glob
import json
import os
import re
import sys
from collections import defaultdict

DEF = re.compile(r"^\((\d+)\)(?: (.*))?$")


def parse(path):
    """Self cost and calls per function, a function being (file, name)."""
    names, files = {}, {}
    self_ir = defaultdict(int)
    calls = defaultdict(list)  # caller -> [(callee, inclusive)]
    total = 0
    cur_fl = cur_fn = None
    call_target = pending_callee = None
    call_file = None

    def ref(table, text):
        m = DEF.match(text)
        if not m:
            return text
        key = m.group(1)
        if m.group(2) is not None:
            table[key] = m.group(2)
        return table.get(key, key)

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if call_target is not None:
                    calls[cur_fn].append((call_target, ir))
                    call_target = None
                else:
                    self_ir[cur_fn] += ir
                continue
            if line.startswith(("fl=", "fi=", "fe=")):
                name = ref(files, line[3:])
                if line.startswith("fl="):
                    cur_fl = name
                continue
            if line.startswith("fn="):
                cur_fn = (cur_fl, ref(names, line[3:]))
                continue
            if line.startswith(("cfi=", "cfl=")):
                call_file = ref(files, line[4:])
                continue
            if line.startswith("cfn="):
                pending_callee = (call_file or cur_fl, ref(names, line[4:]))
                call_file = None
                continue
            if line.startswith("calls="):
                call_target = pending_callee
                continue
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total, self_ir, calls, None


def inclusive(fn, self_ir, calls, memo, stack):
    if fn in memo:
        return memo[fn]
    if fn in stack:
        return 0
    stack.add(fn)
    v = self_ir.get(fn, 0) + sum(ir for _, ir in calls.get(fn, []))
    stack.discard(fn)
    memo[fn] = v
    return v


def meter_cost(self_ir, calls, entry=r"header_filter|body_filter|log_handler"):
    """Instructions of the metering glue's entry points (header and body
    filter, log handler) and everything they call, except the next filter
    of nginx's chain they hand over to (that runs for bare nginx too)."""
    cost = 0
    for fn in list(self_ir.keys()) + [k for k in calls if k not in self_ir]:
        fl, name = fn if isinstance(fn, tuple) else (None, fn)
        if not fl or not fl.endswith("ngx_byok_metering.cpp"):
            continue
        if not re.search(r"::(%s)\(" % entry, name or ""):
            continue
        cost += self_ir.get(fn, 0)
        for callee, ir in calls.get(fn, []):
            cfl, cname = callee
            if "filter" in (cname or "") and not (cfl or "").endswith("ngx_byok_metering.cpp"):
                continue
            cost += ir
    return cost


def short(name):
    name = re.sub(r"\(.*", "", name)
    return name[-70:]


def main():
    d, n = sys.argv[1], int(sys.argv[2])
    for target in ("cgbare", "cgbyok"):
        dumps = sorted(glob.glob(os.path.join(d, target + ".*")))
        hit = [p for p in dumps if p.endswith(".1")]
        if not hit:
            continue
        total, self_ir, calls, fn_file = parse(hit[0])
        print("%s\tir_per_req\t%d" % (target, total // n))
        by_name = defaultdict(int)
        for (fl, name), v in self_ir.items():
            by_name[name] += v
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:25]
        print("%s\ttop\t%s" % (target, json.dumps([[short(k), round(v / n)] for k, v in top])))
        if target == "cgbyok":
            print("%s\tmeter_ir_per_req\t%d" % (target, meter_cost(self_ir, calls) // n))
            sse = [p for p in dumps if p.endswith(".2")]
            chunks = 0
            try:
                chunks = json.load(open(os.path.join(d, "sse.json")))["chunks"]
            except (OSError, ValueError, KeyError):
                pass
            if sse and chunks:
                total2, self2, calls2, files2 = parse(sse[0])
                print("%s\tmeter_ir_per_chunk\t%d" % (target, meter_cost(self2, calls2, "header_filter|body_filter") // chunks))
                print("%s\tsse_ir_per_chunk\t%d" % (target, total2 // chunks))


if __name__ == "__main__":
    main()
