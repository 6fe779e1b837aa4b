"""Configuration (SPEC §3): the minimal config passes `nginx -t`; broken
directives and files are refused with a message that names the config file
and line (and the offending file), never echoing key material."""

import base64
import os
import re
import secrets

import pytest

from harness import MODULE, REPO, free_port, line_of, master_key_line


@pytest.fixture
def cfg(gateway):
    """A gateway that is configured but not started."""
    return gateway(start=False)


def refused(cfg, conf_text, directive_needle, exact_line=True):
    """Runs nginx -t, asserts failure and that the message names the config
    file and the line of `directive_needle` (any line when not
    `exact_line`: checks that need the whole http{} block, such as catalog
    lookups, may report its end). Returns the output."""
    rc, out, path = cfg.nginx_t(conf_text)
    assert rc != 0, f"nginx -t accepted a broken config:\n{out}"
    line = line_of(conf_text, directive_needle)
    want = f"{path}:{line}" if exact_line else f"{path}:"
    assert want in out, f"expected {want} in:\n{out}"
    assert "unknown directive" not in out, out
    return out


def test_full_config_passes(cfg):
    rc, out, _ = cfg.nginx_t()
    assert rc == 0, out
    assert "test is successful" in out
    assert "[warn]" not in out and "[emerg]" not in out, out


def test_full_config_starts_and_serves_metrics(gateway):
    gw = gateway()
    assert len(gw.workers()) == 2
    r = gw.request("GET", "/metrics")
    assert r.status_code == 200


def test_missing_master_key_file(cfg):
    missing = cfg.dir / "secrets" / "nope.keys"
    conf = cfg.render(byok_master_keys=f"byok_master_keys {missing};")
    out = refused(cfg, conf, "byok_master_keys")
    assert str(missing) in out


def test_world_readable_master_key_file(cfg):
    cfg.write_master_keys(cfg.master_key_lines, mode=0o644)
    out = refused(cfg, cfg.render(), "byok_master_keys")
    assert str(cfg.master_keys_path) in out
    for s in cfg.secrets:
        assert s not in out


def test_group_readable_master_key_file_is_refused(cfg):
    cfg.write_master_keys(cfg.master_key_lines, mode=0o640)
    rc, out, _ = cfg.nginx_t(cfg.render())
    assert rc != 0 and "chmod 600" in out, out


@pytest.mark.parametrize("bad_line", [
    "k2 not-base64!!",
    "k2 " + base64.b64encode(secrets.token_bytes(16)).decode(),  # 16 bytes, not 32
    "k2",  # no key
    "k2 " + base64.b64encode(secrets.token_bytes(32)).decode() + " extra",
], ids=["not-base64", "short-key", "no-key", "extra-field"])
def test_malformed_master_key_line(cfg, bad_line):
    cfg.write_master_keys([cfg.master_key_lines[0], bad_line])
    cfg.track(*bad_line.split()[1:])
    out = refused(cfg, cfg.render(), "byok_master_keys")
    # the key file and the offending line (2) are named
    assert re.search(re.escape(str(cfg.master_keys_path)) + r"\D{0,20}\b2\b", out), out
    for s in cfg.secrets:
        assert s not in out, "key material echoed in the error"


def test_empty_master_key_file(cfg):
    cfg.write_master_keys([])
    refused(cfg, cfg.render(), "byok_master_keys")


def test_duplicate_master_key_id(cfg):
    cfg.write_master_keys([master_key_line("k1"), master_key_line("k1")])
    refused(cfg, cfg.render(), "byok_master_keys")


@pytest.mark.parametrize("line", [
    "byok_cache zone=byok:abc;",
    "byok_cache zone=byok;",
    "byok_cache zone=:16m;",
    "byok_cache zone=byok:16m ttl=forever;",
], ids=["size-abc", "no-size", "no-name", "bad-ttl"])
def test_bad_byok_cache(cfg, line):
    refused(cfg, cfg.render(byok_cache=line), "byok_cache")


def test_unknown_byok_cache_parameter(cfg):
    out = refused(cfg, cfg.render(byok_cache="byok_cache zone=byok:16m foo=bar;"), "byok_cache")
    assert "foo" in out


@pytest.mark.parametrize("addr", [
    "127.0.0.1:notaport", "127.0.0.1:70000", "999.1.1.1:6379", "", "unix:",
], ids=["port-text", "port-range", "bad-ip", "empty", "empty-unix"])
def test_byok_redis_bad_address(cfg, addr):
    refused(cfg, cfg.render(byok_redis=f"byok_redis '{addr}' timeout=500ms;"), "byok_redis")


def test_byok_redis_unknown_parameter(cfg, redis_server):
    line = f"byok_redis {redis_server.address} speed=fast;"
    refused(cfg, cfg.render(byok_redis=line), "byok_redis")


def test_byok_redis_unix_socket_and_options_accepted(cfg, redis_server):
    pw = cfg.dir / "secrets" / "redis.pw"
    pw.write_text("secret\n")
    os.chmod(pw, 0o600)
    line = (f"byok_redis unix:{cfg.dir}/redis.sock password_file={pw} db=2 "
            f"connect_timeout=1s timeout=500ms;")
    rc, out, _ = cfg.nginx_t(cfg.render(byok_redis=line))
    assert rc == 0, out


@pytest.mark.parametrize("field,yaml_line,replacement", [
    ("auth", "    auth: bearer\n", "    auth: magic\n"),
    ("base_url", "    base_url: {base}/openai\n", "    base_url: ftp://example/openai\n"),
    ("models", '    models: ["gpt-*", "o1*", "o3*", "o4*", "text-embedding-*", "chatgpt-*"]\n',
     "    models: 42\n"),
], ids=["auth", "base_url", "models"])
def test_invalid_providers_yaml(cfg, fake_provider, field, yaml_line, replacement):
    text = cfg.providers_yaml
    yaml_line = yaml_line.replace("{base}", fake_provider.base)
    assert yaml_line in text
    # the first occurrence belongs to openai
    cfg.providers_path.write_text(text.replace(yaml_line, replacement, 1))
    out = refused(cfg, cfg.render(), "byok_providers")
    assert "openai" in out and field in out, out


def test_providers_yaml_not_yaml(cfg):
    cfg.providers_path.write_text("providers: [unclosed\n")
    out = refused(cfg, cfg.render(), "byok_providers")
    assert str(cfg.providers_path) in out or "providers.yaml" in out


def test_missing_providers_file(cfg):
    missing = cfg.dir / "nope.yaml"
    out = refused(cfg, cfg.render(byok_providers=f"byok_providers {missing};"), "byok_providers")
    assert str(missing) in out


def test_builtin_catalog_when_no_providers_directive(cfg):
    rc, out, _ = cfg.nginx_t(cfg.render(byok_providers=None))
    assert rc == 0, out


def test_system_key_missing_file(cfg):
    missing = cfg.dir / "secrets" / "nope.key"
    out = refused(cfg, cfg.render(byok_system_key=f"byok_system_key openrouter {missing};"),
                  "byok_system_key")
    assert str(missing) in out


def test_system_key_unknown_provider(cfg):
    line = f"byok_system_key nosuchprovider {cfg.system_key_path};"
    out = refused(cfg, cfg.render(byok_system_key=line), "byok_system_key", exact_line=False)
    assert "nosuchprovider" in out


def test_system_key_not_echoed(cfg):
    line = f"byok_system_key nosuchprovider {cfg.system_key_path};"
    rc, out, _ = cfg.nginx_t(cfg.render(byok_system_key=line))
    assert cfg.system_key not in out


def test_missing_admin_token_file(cfg):
    missing = cfg.dir / "secrets" / "nope.tokens"
    out = refused(cfg, cfg.render(byok_admin_token_file=f"byok_admin_token_file {missing};"),
                  "byok_admin_token_file")
    assert str(missing) in out


def test_byok_fallback_directive(cfg):
    rc, out, _ = cfg.nginx_t(cfg.render(byok_fallback="byok_fallback off;"))
    assert rc == 0, out
    rc, out, _ = cfg.nginx_t(cfg.render(byok_fallback="byok_fallback openrouter;"))
    assert rc == 0, out
    conf = cfg.render(byok_fallback="byok_fallback nosuchprovider;")
    out = refused(cfg, conf, "byok_fallback", exact_line=False)
    assert "nosuchprovider" in out


def test_duplicate_directive(cfg):
    conf = cfg.render(byok_cache="byok_cache zone=byok:16m;\n    byok_cache zone=other:16m;")
    rc, out, path = cfg.nginx_t(conf)
    assert rc != 0, out
    assert "duplicate" in out or "is duplicate" in out, out


def test_debug_error_log_refused_or_warned(cfg):
    """SPEC §10: refuse to start (or warn loudly) with error_log ... debug."""
    conf = cfg.render().replace(f"error_log {cfg.error_log_path} notice;",
                                f"error_log {cfg.error_log_path} debug;")
    rc, out, _ = cfg.nginx_t(conf)
    assert rc != 0 or "[warn]" in out or "[emerg]" in out, out
    assert "byok" in out, out


def test_shipped_providers_yaml_passes(cfg):
    shipped = REPO / "conf" / "providers.yaml"
    assert shipped.exists(), "conf/providers.yaml is not shipped"
    rc, out, _ = cfg.nginx_t(cfg.render(byok_providers=f"byok_providers {shipped};"))
    assert rc == 0, out


def render_example_conf(cfg) -> str:
    """conf/nginx.conf with /etc/byok/ files pointed at temp files, logs and
    pid inside the temp dir, the upstreams include dropped (no DNS here)."""
    text = (REPO / "conf" / "nginx.conf").read_text()
    t = cfg.dir / "temp"
    repl = {
        "/etc/byok/master.keys": str(cfg.master_keys_path),
        "/etc/byok/providers.yaml": str(REPO / "conf" / "providers.yaml"),
        "/etc/byok/openrouter.key": str(cfg.system_key_path),
        "/etc/byok/admin.tokens": str(cfg.admin_tokens_path),
        "/etc/byok/byok_gateway.conf": str(REPO / "conf" / "byok_gateway.conf"),
        "/etc/byok/byok_admin.conf": str(REPO / "conf" / "byok_admin.conf"),
    }
    for a, b in repl.items():
        text = text.replace(a, b)
    text = re.sub(r"^\s*include\s+/etc/byok/upstreams\.d/[^;]*;", "", text, flags=re.M)
    text = re.sub(r"^load_module\s+[^;]*;", f"load_module {MODULE};", text, flags=re.M)
    text = re.sub(r"^(\s*error_log\s+)\S+", rf"\g<1>{cfg.error_log_path}", text, flags=re.M)
    text = re.sub(r"^(\s*access_log\s+)\S+", rf"\g<1>{cfg.access_log_path}", text, flags=re.M)
    text = re.sub(r"^pid\s+[^;]*;", f"pid {cfg.pid_path};", text, flags=re.M)
    text = re.sub(r"listen\s+127\.0\.0\.1:8080", f"listen 127.0.0.1:{free_port()}", text)
    text = re.sub(r"listen\s+127\.0\.0\.1:8081", f"listen 127.0.0.1:{free_port()}", text)
    text = re.sub(r"^(\s*byok_redis\s+)\S+", rf"\g<1>{cfg.redis.address}", text, flags=re.M)
    text = text.replace("http {", "http {\n"
                        f"    client_body_temp_path {t}/body; proxy_temp_path {t}/proxy;\n"
                        f"    fastcgi_temp_path {t}/fastcgi; uwsgi_temp_path {t}/uwsgi;\n"
                        f"    scgi_temp_path {t}/scgi;\n", 1)
    assert "/etc/byok" not in text, text
    return text


def test_example_nginx_conf_passes(cfg):
    rc, out, _ = cfg.nginx_t(render_example_conf(cfg), name="example.conf")
    assert rc == 0, out
