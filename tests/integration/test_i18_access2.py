"""Issue 18, session 5: the access handler's hit path. A provider key too
long for std::string's inline buffer is copied out of the worker's locked
key cache into a wiped block kept from the previous request, not into a
fresh heap block: a hit costs the same allocations whatever the key's
length, and the key is still sent, and never leaked."""
import shutil

import pytest
import harness


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the malloc counter")
@pytest.mark.skipif("LD_PRELOAD" in harness.NGINX_ENV, reason="sanitizer runtimes own malloc")
def test_i18_access2_03_a_long_provider_key_costs_no_allocation_per_hit(gateway, fake_provider,
                                                                        tmp_path, monkeypatch):
    mc = harness.MallocCounter(tmp_path, monkeypatch)
    gw = gateway(worker_processes=1)
    short_key = "sk-short-01"                       # fits the inline buffer
    long_key = "sk-proj-" + "L0ngKey9" * 16         # 136 bytes: a heap block
    short = gw.provision(keys={"openai": short_key})
    long_ = gw.provision(keys={"openai": long_key})
    for p in (short, long_):
        for _ in range(20):  # warm: snapshot and key cached, buffers grown
            r = gw.chat(p)
            assert r.status_code == 200, (r.status_code, r.text[:300])

    def per_hit(p, n=100):
        def hit():
            r = gw.chat(p)
            assert r.status_code == 200 and r.headers["x-byok-route"] == "byok"
        return mc.per_call(gw, hit, n)

    a_short, a_long = per_hit(short), per_hit(long_)
    print("allocations per hit: short key", a_short, "long key", a_long)
    # before: one malloc more per hit for the long key (its copy)
    assert a_long - a_short < 0.5, (a_short, a_long)
    # the long key still reaches the provider whole
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {long_key}"
    gw.assert_no_leaks()
