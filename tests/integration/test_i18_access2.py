"""Issue 18, session 5: the access handler's hit path. A provider key too
long for std::string's inline buffer is copied out of the worker's locked
key cache into a wiped block kept from the previous request, not into a
fresh heap block: a hit costs the same allocations whatever the key's
length, and the key is still sent, and never leaked."""
import shutil
import subprocess

import pytest
import harness
from harness import REPO


def _worker_pids(gw):
    out = subprocess.run(["pgrep", "-P", str(gw.proc.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _calls(path):
    return int.from_bytes(path.read_bytes()[:8], "little") if path.exists() else 0


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the malloc counter")
@pytest.mark.skipif("LD_PRELOAD" in harness.NGINX_ENV, reason="sanitizer runtimes own malloc")
def test_i18_access2_03_a_long_provider_key_costs_no_allocation_per_hit(gateway, fake_provider,
                                                                        tmp_path, monkeypatch):
    so, counts = tmp_path / "malloc_count.so", tmp_path / "mc"
    counts.mkdir()
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(so),
                    str(REPO / "bench" / "malloc_count.c"), "-ldl", "-lpthread"], check=True)
    monkeypatch.setitem(harness.NGINX_ENV, "LD_PRELOAD", str(so))
    monkeypatch.setitem(harness.NGINX_ENV, "MALLOC_COUNT_DIR", str(counts))
    gw = gateway(worker_processes=1)
    short_key = "sk-short-01"                       # fits the inline buffer
    long_key = "sk-proj-" + "L0ngKey9" * 16         # 136 bytes: a heap block
    short = gw.provision(keys={"openai": short_key})
    long_ = gw.provision(keys={"openai": long_key})
    for p in (short, long_):
        for _ in range(20):  # warm: snapshot and key cached, buffers grown
            r = gw.chat(p)
            assert r.status_code == 200, (r.status_code, r.text[:300])
    (worker,) = _worker_pids(gw)

    def per_hit(p, n=100):
        before = _calls(counts / str(worker))
        for _ in range(n):
            r = gw.chat(p)
            assert r.status_code == 200 and r.headers["x-byok-route"] == "byok"
        return (_calls(counts / str(worker)) - before) / n

    a_short, a_long = per_hit(short), per_hit(long_)
    print("allocations per hit: short key", a_short, "long key", a_long)
    # before: one malloc more per hit for the long key (its copy)
    assert a_long - a_short < 0.5, (a_short, a_long)
    # the long key still reaches the provider whole
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {long_key}"
    gw.assert_no_leaks()
