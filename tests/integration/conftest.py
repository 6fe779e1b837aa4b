"""Fixtures: a real redis-server, a fake provider and real nginx gateways.

    redis_server   RedisServer (session process; FLUSHALL before each test,
                   restarted if a previous test stopped it). .client (str),
                   .raw (bytes), .stop(), .start(), .all_values(), .assert_absent()
    fake_provider  FakeProvider (session server; rules and records reset
                   before each test). .set_rule(), .fail(), .stream(),
                   .requests(prefix), .last(prefix), .wait_for()
    gateway        factory: gateway(start=True, **Gateway options) -> Gateway;
                   every gateway is stopped after the test and checked for
                   crashed workers and sanitizer reports (make test-asan).
    gw             a started default gateway.
    sshd           SshServer: a real OpenSSH sshd on loopback (session);
                   .host, .port, .username, .private_key, .fingerprint
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_provider import FakeProvider  # noqa: E402
from harness import Gateway, RedisServer, SshServer  # noqa: E402


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(_redis_session):
    _redis_session.start()  # a previous outage test may have stopped it
    _redis_session.client.flushall()
    yield _redis_session
    _redis_session.start()


@pytest.fixture(scope="session")
def _fake_session():
    fake = FakeProvider()
    yield fake
    fake.close()


@pytest.fixture
def fake_provider(_fake_session):
    _fake_session.reset()
    yield _fake_session
    _fake_session.reset()


@pytest.fixture
def gateway(tmp_path, redis_server, fake_provider):
    made = []

    def make(start: bool = True, **options) -> Gateway:
        gw = Gateway(tmp_path / f"nginx{len(made)}", redis_server, fake_provider, **options)
        made.append(gw)
        if start:
            gw.start()
        return gw

    yield make
    crashed, reports = [], []
    for gw in made:
        gw.stop()
        crashed += gw.crashes()
        reports += gw.sanitizer_reports()
    assert not crashed, "nginx workers crashed:\n" + "\n".join(crashed)
    assert not reports, "sanitizer reports:\n" + "\n".join(reports)


@pytest.fixture
def gw(gateway):
    return gateway()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


# BYOK_TEST_REDIS=cluster (make test-cluster): the shared Redis of every
# suite is a 3-primary Redis Cluster and every gateway says
# `byok_redis cluster=<the three nodes>` (issue 16).
import os  # noqa: E402

if os.environ.get("BYOK_TEST_REDIS") == "cluster":
    from harness import RedisCluster  # noqa: E402

    @pytest.fixture(scope="session")
    def _redis_session(tmp_path_factory):  # noqa: F811 - replaces the standalone one
        cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
        cluster.start()
        yield cluster
        cluster.stop()

    @pytest.fixture
    def redis_server(_redis_session):  # noqa: F811
        _redis_session.start()
        _redis_session.flushall()
        yield _redis_session
        _redis_session.start()
