"""Issue 10, configuration items: debug logging anywhere is refused (10),
info-level logging of client header lines is warned about (11), secret files
with group/other bits or a foreign owner are refused (13)."""

import os

import pytest


@pytest.fixture
def cfg(gateway):
    """A gateway that is configured but not started."""
    return gateway(start=False)


def refused_with(cfg, conf_text, needle):
    rc, out, _ = cfg.nginx_t(conf_text)
    assert rc != 0, f"nginx -t accepted:\n{out}"
    assert "[emerg]" in out and "byok" in out and needle in out, out
    return out


@pytest.mark.parametrize("where", ["http", "server", "location"])
def test_i10_10_debug_error_log_refused_at_every_level(cfg, where):
    log = f"error_log {cfg.dir / 'logs' / 'debug.log'} debug;"
    conf = cfg.render()
    if where == "http":
        conf = conf.replace("http {\n", "http {\n    " + log + "\n", 1)
    elif where == "server":
        conf = conf.replace("    server {\n", "    server {\n        " + log + "\n", 1)
    else:
        conf = conf.replace("location = /metrics {", "location = /metrics { " + log, 1)
    assert log in conf
    out = refused_with(cfg, conf, "debug")
    assert "http, server or location" in out, out
    assert not (cfg.dir / "logs" / "debug.log").exists() or \
        (cfg.dir / "logs" / "debug.log").stat().st_size == 0


def test_i10_10_debug_connection_refused(cfg):
    conf = cfg.render().replace("events {}", "events { debug_connection 127.0.0.1; }")
    refused_with(cfg, conf, "debug_connection")


def test_i10_10_debug_main_error_log_refused(cfg):
    conf = cfg.render().replace(f"error_log {cfg.error_log_path} notice;",
                                f"error_log {cfg.error_log_path} debug;")
    assert " debug;" in conf
    refused_with(cfg, conf, "error_log")


def test_i10_11_info_level_warns_about_client_header_lines(cfg):
    conf = cfg.render().replace(f"error_log {cfg.error_log_path} notice;",
                                f"error_log {cfg.error_log_path} info;")
    assert " info;" in conf
    rc, out, _ = cfg.nginx_t(conf)
    assert rc == 0, out
    warns = [l for l in out.splitlines() if "[warn]" in l and "byok" in l]
    assert len(warns) == 1, out
    assert "client header" in warns[0] and '"notice"' in warns[0], out


def test_i10_11_notice_level_does_not_warn(cfg):
    rc, out, _ = cfg.nginx_t()
    assert rc == 0, out
    assert "[warn]" not in out, out


SECRET_FILES = {
    "byok_master_keys": lambda g: g.master_keys_path,
    "byok_admin_token_file": lambda g: g.admin_tokens_path,
    "byok_system_key": lambda g: g.system_key_path,
}


@pytest.mark.parametrize("directive", sorted(SECRET_FILES))
@pytest.mark.parametrize("mode", [0o640, 0o620, 0o604, 0o610])
def test_i10_13_secret_file_with_group_or_other_bits_refused(cfg, directive, mode):
    path = SECRET_FILES[directive](cfg)
    os.chmod(path, mode)
    rc, out, _ = cfg.nginx_t()
    assert rc != 0, out
    assert "[emerg]" in out and str(path) in out and f"chmod 600 {path}" in out, out
    os.chmod(path, 0o600)
    rc, out, _ = cfg.nginx_t()
    assert rc == 0, out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
@pytest.mark.parametrize("directive", sorted(SECRET_FILES))
def test_i10_13_secret_file_owned_by_another_user_refused(cfg, directive):
    path = SECRET_FILES[directive](cfg)
    os.chown(path, 65534, 65534)
    rc, out, _ = cfg.nginx_t()
    assert rc != 0, out
    assert "[emerg]" in out and str(path) in out and "owned by uid 65534" in out \
        and f"chown root {path}" in out, out
    for secret in cfg.secrets:
        assert secret not in out
    os.chown(path, 0, 0)
    rc, out, _ = cfg.nginx_t()
    assert rc == 0, out
