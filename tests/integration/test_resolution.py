"""SPEC §10: a tenant-chosen host (custom provider endpoint) is checked after
DNS resolution, and nginx connects to the address that was checked. A tiny
DNS responder on loopback answers every A query with 127.0.0.1."""

import socket
import struct
import threading

import pytest

from harness import (assert_json_error, assert_never_connected, canary, custom_catalog,
                     silent_listener)


class FakeDns:
    """Answers every A query with 127.0.0.1 (and AAAA with no records)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            qid, = struct.unpack("!H", data[:2])
            end = 12
            labels = []
            while data[end] != 0:
                n = data[end]
                labels.append(data[end + 1:end + 1 + n].decode())
                end += 1 + n
            qtype, = struct.unpack("!H", data[end + 1:end + 3])
            question = data[12:end + 5]
            self.queries.append((".".join(labels), qtype))
            answers = b""
            if qtype == 1:
                answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton("127.0.0.1")
            header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1 if answers else 0, 0, 0)
            self.sock.sendto(header + question + answers, peer)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def dns():
    d = FakeDns()
    yield d
    d.close()


def test_name_resolving_to_loopback_is_refused_after_resolution(gateway, dns, fake_provider):
    listener = silent_listener(0.3)
    port = listener.getsockname()[1]
    try:
        gw = gateway(providers=custom_catalog(fake_provider.base),
                     extra_http=f"resolver 127.0.0.1:{dns.port} ipv6=off valid=1s;")
        p = gw.provision(keys={})
        r = gw.admin("PUT", f"/projects/{p.pid}/keys/custom",
                     {"key": canary(), "endpoint": f"https://internal.example:{port}/v1"})
        assert r.status_code == 201, r.text  # a name passes the write-time check

        r = gw.chat(p, model="anything", headers={"x-byok-provider": "custom"})
        assert_json_error(r, 502)
        assert r.json()["error"]["code"] == "endpoint_refused"
        assert ("internal.example", 1) in dns.queries, "the module did not resolve the name itself"
        assert_never_connected(listener)

        # The live key test follows the same rule.
        r = gw.admin("POST", f"/projects/{p.pid}/keys/custom/test")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "error"
        assert_never_connected(listener)
        assert "refused" in gw.error_log()
    finally:
        listener.close()


def test_allowed_name_is_pinned_to_the_checked_address(gateway, dns, fake_provider):
    gw = gateway(providers=custom_catalog(fake_provider.base),
                 extra_http=(f"resolver 127.0.0.1:{dns.port} ipv6=off valid=1s;\n"
                             "    byok_allow_endpoint models.internal;"))
    p = gw.provision(keys={})
    key = canary("sk-custom-")
    port = fake_provider.base.rsplit(":", 1)[1]
    r = gw.admin("PUT", f"/projects/{p.pid}/keys/custom",
                 {"key": key, "endpoint": f"http://models.internal:{port}/custom/v1"})
    assert r.status_code == 201, r.text
    r = gw.chat(p, model="my-model", headers={"x-byok-provider": "custom"})
    assert r.status_code == 200, r.text
    rec = fake_provider.last("/custom")
    assert rec.path == "/custom/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {key}"
    assert rec.headers["host"] == f"models.internal:{port}"
