#!/usr/bin/python3
"""Redis's CPU per usage event for the ways a batch of events can be sent
(issue 18, session 5). Starts a private redis-server on a free loopback
port, sends BATCHES batches of 100 events (the 15 fields of README "Usage
metering", typical values) in each layout, and prints the server process's
CPU (utime + stime from /proc) per event:

  eval pairs     EVAL looping over name/value pairs (the layout until session 5)
  eval values    EVAL whose script names the fields; values only (today's)
  xadd pipelined one XADD per event, pipelined (one reply per event)
  packed field   one XADD per event with a single packed field (a schema change)

    bench/redis_event_cost.py [BATCHES]        (default 600; ~30 s)
"""
import os
import socket
import subprocess
import sys
import time

BATCHES = int(sys.argv[1]) if len(sys.argv) > 1 else 600
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
MAXLEN = ["MAXLEN", "~", "100000", "*"]


def eval_pairs(b):
    args = ["EVAL", PAIRS, "1", "ev", "100000", str(2 * len(NAMES))]
    for i in range(b * N, (b + 1) * N):
        for n, v in zip(NAMES, values(i)):
            args += [n, v]
    return resp(args), 1


def eval_values(b):
    args = ["EVAL", VALUES, "1", "ev", "100000"]
    for i in range(b * N, (b + 1) * N):
        args += values(i)
    return resp(args), 1


def xadd_pipelined(b):
    cmds = []
    for i in range(b * N, (b + 1) * N):
        args = ["XADD", "ev"] + MAXLEN
        for n, v in zip(NAMES, values(i)):
            args += [n, v]
        cmds.append(resp(args))
    return b"".join(cmds), N


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

        def cpu():
            f = open("/proc/%d/stat" % server.pid).read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

        for name, layout in [("eval pairs", eval_pairs), ("eval values", eval_values),
                             ("xadd pipelined", xadd_pipelined), ("packed field", packed_field)]:
            send(resp(["DEL", "ev"]), 1)
            t0 = cpu()
            for b in range(BATCHES):
                send(*layout(b))
            print("%-15s %.2f us of Redis CPU per event" % (name, (cpu() - t0) * 1e6 / (BATCHES * N)))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
