#!/usr/bin/python3
"""Redis's CPU per usage event for the ways a batch of events can be sent
(issue 18, sessions 5 and 6). Starts a private redis-server on a free
loopback port, sends BATCHES batches of 100 events (the 15 fields of README
"Usage metering", typical values) in each layout, and prints the server
process's CPU per event (on-CPU nanoseconds from /proc/<pid>/task/*/schedstat:
clock ticks were too coarse to tell layouts ~0.2 us apart). Before each
layout the stream is filled to the cap (100,000 entries), so every layout
pays for trimming as it does in production:

  eval pairs     EVAL looping over name/value pairs (the layout until session 5)
  eval values    EVAL whose script names the fields; values only; MAXLEN ~ on
                 every XADD (session 5)
  eval xtrim     the same without MAXLEN on the XADDs and one XTRIM MAXLEN ~
                 after them (today's, session 6)
  xadd pipelined one XADD per event, pipelined (one reply per event)
  xadd xtrim     the same without MAXLEN, one XTRIM after them (no Lua)
  packed field   one XADD per event with a single packed field (a schema change)

Each layout is measured ROUNDS times, interleaved, and the median printed.

    bench/redis_event_cost.py [BATCHES [ROUNDS]]      (default 600 3; ~1 min)
"""
import os
import socket
import subprocess
import sys
import time

BATCHES = int(sys.argv[1]) if len(sys.argv) > 1 else 600
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CAP = 100000
N = 100
NAMES = ["request_id", "ts_ms", "project", "provider", "model", "route", "key_id", "status",
         "latency_ms", "tokens_known", "input_tokens", "output_tokens", "cached_tokens",
         "cost_micro_usd", "fallback_reason"]


def values(i):
    return ["%032x" % i, str(1764000000000 + i), "proj_%d" % (i % 50), "openai", "gpt-4o-mini",
            "byok", "k_abc123", "200", "12", "1", "23", "117", "0", "84", ""]


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


PAIRS = ("local w = tonumber(ARGV[2])\nfor i = 3, #ARGV, w do\n"
         "  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i, i + w - 1))\n"
         "end\nreturn 0")
VALUES = ("for i = 2, #ARGV, %d do\n  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', %s)\n"
          "end\nreturn 0" % (len(NAMES), ", ".join("'%s', ARGV[i+%d]" % (n, k)
                                                    for k, n in enumerate(NAMES))))
XTRIM = ("for i = 2, #ARGV, %d do\n  redis.call('XADD', KEYS[1], '*', %s)\n"
         "end\nredis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])\nreturn 0"
         % (len(NAMES), ", ".join("'%s', ARGV[i+%d]" % (n, k) for k, n in enumerate(NAMES))))
MAXLEN = ["MAXLEN", "~", str(CAP), "*"]


def eval_pairs(b):
    args = ["EVAL", PAIRS, "1", "ev", str(CAP), str(2 * len(NAMES))]
    for i in range(b * N, (b + 1) * N):
        for n, v in zip(NAMES, values(i)):
            args += [n, v]
    return resp(args), 1


def eval_values(b, script=VALUES):
    args = ["EVAL", script, "1", "ev", str(CAP)]
    for i in range(b * N, (b + 1) * N):
        args += values(i)
    return resp(args), 1


def eval_xtrim(b):
    return eval_values(b, XTRIM)


def xadd_pipelined(b, cap=MAXLEN):
    cmds = []
    for i in range(b * N, (b + 1) * N):
        args = ["XADD", "ev"] + cap
        for n, v in zip(NAMES, values(i)):
            args += [n, v]
        cmds.append(resp(args))
    return b"".join(cmds), N


def xadd_xtrim(b):
    payload, replies = xadd_pipelined(b, ["*"])
    return payload + resp(["XTRIM", "ev", "MAXLEN", "~", str(CAP)]), replies + 1


def packed_field(b):
    return b"".join(resp(["XADD", "ev"] + MAXLEN + ["e", "|".join(values(i))])
                    for i in range(b * N, (b + 1) * N)), N


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("redis-server did not start")

        def send(payload, replies):
            conn.sendall(payload)
            buf = b""
            while buf.count(b"\r\n") < replies:  # each reply here is one line
                buf += conn.recv(1 << 20)

        def cpu():  # seconds on CPU, all of the server's threads
            task = "/proc/%d/task" % server.pid
            return sum(int(open("%s/%s/schedstat" % (task, t)).read().split()[0])
                       for t in os.listdir(task)) / 1e9

        fill = ("for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', %s) end"
                % ", ".join("'%s', '%s'" % nv for nv in zip(NAMES, values(0))))
        layouts = [("eval pairs", eval_pairs), ("eval values", eval_values),
                   ("eval xtrim", eval_xtrim), ("xadd pipelined", xadd_pipelined),
                   ("xadd xtrim", xadd_xtrim), ("packed field", packed_field)]
        per_event = {name: [] for name, _ in layouts}
        for _ in range(ROUNDS):
            for name, layout in layouts:
                send(resp(["DEL", "ev"]), 1)
                send(resp(["EVAL", fill, "1", "ev", str(CAP)]), 1)  # at the cap
                batches = [layout(b) for b in range(BATCHES)]
                t0 = cpu()
                for batch in batches:
                    send(*batch)
                per_event[name].append((cpu() - t0) * 1e6 / (BATCHES * N))
        for name, us in per_event.items():
            print("%-15s %.2f us of Redis CPU per event (median of %d; %s)"
                  % (name, sorted(us)[len(us) // 2], len(us), " ".join("%.2f" % u for u in us)))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
