"""The official OpenAI and Anthropic Node SDKs work against the gateway with
only baseURL and apiKey changed (SPEC §4, issue 3)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"

ANTHROPIC_MESSAGE = {
    "id": "msg_fake_01", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-latest",
    "content": [{"type": "text", "text": "hi from fake anthropic"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 5},
}


@pytest.fixture(scope="module")
def sdk():
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are required (scripts/deps.sh test installs them)"
    if not (SDK_DIR / "node_modules" / "openai").exists() or \
            not (SDK_DIR / "node_modules" / "@anthropic-ai" / "sdk").exists():
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock",
                        "--loglevel=error"], cwd=SDK_DIR, check=True, timeout=300)
    return SDK_DIR / "sdk_check.mjs"


def test_official_sdks_through_gateway(gw, fake_provider, sdk):
    p = gw.provision(keys={"openai": None, "anthropic": None})
    fake_provider.set_rule("/anthropic", body=ANTHROPIC_MESSAGE)

    run = subprocess.run(["node", str(sdk), gw.url(""), p.gateway_key], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["openai"]["model"] == "gpt-4o-mini"
    assert out["anthropic"]["text"] == "hi from fake anthropic"

    oa = fake_provider.last("/openai")
    assert oa.path == "/openai/chat/completions"
    assert oa.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert oa.json()["messages"][0]["content"] == "hello from the openai sdk"

    an = fake_provider.last("/anthropic")
    assert an.path == "/anthropic/v1/messages"
    assert an.headers["x-api-key"] == p.keys["anthropic"]
    assert an.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in an.headers
    for rec in fake_provider.requests():
        assert p.gateway_key not in rec.raw_text()
