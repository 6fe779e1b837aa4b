"""An admin change is in force on the node that answered it as soon as the
answer arrives: the node drops the project's cached entries itself instead of
relying on its own invalidation message from Redis (every other node still
gets that message). Found as a rare test flake (a request right after a key
DELETE used the deleted key); the tests hold the node's subscriber off so the
message cannot arrive first."""
import contextlib

from harness import wait_until

HANG_GUARD = 30  # seconds; only stops a hung test, never decides a verdict


@contextlib.contextmanager
def subscriber_held_off(gw, redis_server):
    """The gateway's subscriber is disconnected and cannot subscribe again
    (ACL), so no invalidation message reaches the node meanwhile."""
    c = redis_server.client

    def subscribers():
        return c.pubsub_numsub("byok:invalidate")[0][1]

    c.execute_command("ACL", "SETUSER", "default", "-subscribe")
    try:
        c.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        wait_until(lambda: subscribers() == 0, HANG_GUARD, what="the subscriber to be gone")
        yield
    finally:
        c.execute_command("ACL", "SETUSER", "default", "+subscribe")
        wait_until(lambda: subscribers() >= 1, HANG_GUARD, what="the subscriber to be back")


def test_i18_rw_01_a_changed_key_is_used_by_the_next_request_on_the_same_node(
        gw, fake_provider, redis_server):
    p = gw.provision(keys={"openai": None})
    assert gw.chat(p).status_code == 200  # the project is cached
    with subscriber_held_off(gw, redis_server):
        key = gw.put_key(p.pid, "openai")
        gw.track(key)
        fake_provider.clear()
        for _ in range(4):  # both workers
            assert gw.chat(p).status_code == 200
        assert fake_provider.used_keys("/openai") == [key] * 4


def test_i18_rw_02_a_revoked_gateway_key_is_refused_by_the_next_request_on_the_same_node(
        gw, fake_provider, redis_server):
    p = gw.provision(keys={"openai": None})
    assert gw.chat(p).status_code == 200
    with subscriber_held_off(gw, redis_server):
        r = gw.admin("DELETE", f"/projects/{p.pid}/api-keys/{p.gateway_key_id}")
        assert r.status_code in (200, 204), r.text
        for _ in range(4):
            assert gw.chat(p).status_code == 401
