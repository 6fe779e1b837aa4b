"""Issue 17 item 3 (uploads on /v1) and item 7 (Idempotency-Key): multipart
bodies are routed by their "model" field, read as a stream (a spilled body
never comes back into memory) and rewritten for the fallback provider; any
other non-JSON body goes through untouched; a request whose Idempotency-Key
the gateway saw within the last minute gets no fallback retry of ours."""

import base64
import hashlib
import json
import secrets
import struct
import subprocess
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from harness import REPO, assert_json_error
from test_i17_sdk import shipped_catalog_on

TRANSCRIBE = "/v1/audio/transcriptions"
BOUNDARY = "----byok-test-" + "7" * 12


def multipart(fields, files=(), boundary=BOUNDARY):
    """A multipart/form-data body, fields and files in the given order."""
    out = b""
    for name, filename, ctype, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    for name, value in fields:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def parse_form(body: bytes, content_type: str):
    """The fields and files a standard multipart parser (Python's email
    package, not ours) reads from what the provider received."""
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    assert msg.is_multipart() and not msg.defects, msg.defects
    out = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = part.get_payload(decode=True)
    return out


def audio(size: int) -> bytes:
    """Bytes that look like the start of a multipart delimiter here and there."""
    chunk = b"ID3\x03\x00\r\n--" + BOUNDARY[:9].encode() + b"\r\r\n\xff\xfb" + bytes(range(256))
    return (chunk * (size // len(chunk) + 1))[:size]


def upload(gw, p, model="gpt-4o-transcribe", size=2048, path=TRANSCRIBE, headers=None):
    data = audio(size)
    body, ctype = multipart([("model", model), ("language", "en")],
                            files=[("file", "speech.mp3", "audio/mpeg", data)])
    r = gw.request("POST", path, data=body, headers={**p.auth, "content-type": ctype, **(headers or {})})
    return r, body, ctype, data


# -- item 3: multipart uploads ------------------------------------------------------

@pytest.mark.parametrize("size", [2048, 3 * 1024 * 1024], ids=["memory", "temp_file"])
def test_i17_03_multipart_upload_routes_by_its_model_field_untouched(gw, fake_provider, size):
    p = gw.provision(keys={"openai": None})
    r, body, ctype, data = upload(gw, p, size=size)
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "byok" and r.headers["x-byok-provider"] == "openai"
    rec = fake_provider.last("/openai")
    assert rec.path == "/openai/audio/transcriptions"
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert rec.headers["content-type"] == ctype
    assert rec.body == body  # byte for byte
    gw.assert_no_leaks(r)


@pytest.mark.parametrize("size", [2048, 3 * 1024 * 1024], ids=["memory", "temp_file"])
def test_i17_03_multipart_model_is_rewritten_for_the_fallback(gw, fake_provider, size):
    """No OpenAI key: the operator's OpenRouter key, model "openai/<model>"
    in the form field; the file bytes arrive intact."""
    p = gw.provision(keys={"anthropic": None})
    r, body, ctype, data = upload(gw, p, size=size)
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "fallback", r.headers
    rec = fake_provider.last("/openrouter")
    assert rec.path == "/openrouter/audio/transcriptions"
    form = parse_form(rec.body, rec.headers["content-type"])
    assert form["model"] == b"openai/gpt-4o-transcribe"
    assert form["language"] == b"en" and form["file"] == data
    assert int(rec.headers["content-length"]) == len(rec.body)
    gw.assert_no_leaks(r)


@pytest.mark.parametrize("size", [2048, 3 * 1024 * 1024], ids=["memory", "temp_file"])
def test_i17_03_multipart_retry_after_a_failed_direct_call(gw, fake_provider, size):
    """The first call sends the client's body as it is; the fallback retry
    the rewritten one — also when the body sits in nginx's temp file."""
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 503, "busy")
    r, body, ctype, data = upload(gw, p, size=size)
    assert r.status_code == 200 and r.headers["x-byok-route"] == "fallback", r.text
    assert fake_provider.last("/openai").body == body
    form = parse_form(fake_provider.last("/openrouter").body, ctype)
    assert form["model"] == b"openai/gpt-4o-transcribe" and form["file"] == data


def test_i17_03_multipart_without_model_goes_to_the_projects_provider(gw, fake_provider):
    """/v1/files names no model: like a bodiless request, it goes to the
    project's provider with the project's key, not to the operator's."""
    p = gw.provision(keys={"openai": None})
    body, ctype = multipart([("purpose", "batch")],
                            files=[("file", "batch.jsonl", "application/jsonl",
                                    b'{"model":"claude-x","custom_id":"1"}\n')])
    r = gw.request("POST", "/v1/files", data=body, headers={**p.auth, "content-type": ctype})
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert rec.path == "/openai/files" and rec.body == body
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert fake_provider.requests("/openrouter") == []


def test_i17_03_other_content_types_pass_through_when_the_provider_is_known(gw, fake_provider):
    p = gw.provision(keys={"openai": None, "anthropic": None})
    for headers, provider, data in (
            ({"x-byok-provider": "anthropic"}, "anthropic", audio(5000)),
            ({}, "openai", audio(5000)),  # the project's first provider
            ({}, "openai", audio(3 * 1024 * 1024))):  # in the temp file, never read back
        r = gw.request("POST", "/v1/audio/speech-raw", data=data,
                       headers={**p.auth, "content-type": "audio/mpeg", **headers})
        assert r.status_code == 200, r.text
        rec = fake_provider.last()
        assert rec.provider == provider, rec.path
        assert rec.body == data and rec.headers["content-type"] == "audio/mpeg"
        assert rec.headers.get("x-byok-provider") is None


def test_i17_03_opaque_body_is_never_edited(gw, fake_provider):
    """A JSON-looking body sent as application/octet-stream is not JSON to
    the gateway: no model routing, no stream_options inserted."""
    p = gw.provision(keys={"openai": None})
    data = b'{"model":"claude-x","stream":true}'
    r = gw.request("POST", "/v1/chat/completions", data=data,
                   headers={**p.auth, "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert rec.provider == "openai" and rec.body == data


def test_i17_03_bad_multipart_is_a_400_and_reaches_no_provider(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    body, ctype = multipart([("model", "gpt-4o-transcribe")])
    cases = [
        (body[:-10], ctype, "it ends before its closing boundary"),
        (b'{"model":"gpt-4o"}', "multipart/form-data; boundary=x",
         "it ends before its closing boundary"),  # JSON declared as multipart
        (body, "multipart/form-data", "without a boundary"),
        (multipart([("model", "a"), ("model", "b")])[0], ctype, "more than one \"model\""),
        (multipart([("model", "gpt\x01x")])[0], ctype, "invalid characters"),
    ]
    for data, ct, message in cases:
        r = gw.request("POST", TRANSCRIBE, data=data, headers={**p.auth, "content-type": ct})
        err = assert_json_error(r, 400)
        assert message in err["message"], err
    assert fake_provider.requests() == []
    gw.assert_no_leaks()


def test_i17_03_json_bodies_keep_their_rules(gw, fake_provider):
    """curl -d (form-urlencoded) and fetch (text/plain) still mean JSON."""
    p = gw.provision(keys={"openai": None})
    for ct in ("application/x-www-form-urlencoded", "text/plain;charset=UTF-8"):
        r = gw.request("POST", "/v1/chat/completions", data=b'{"model":"gpt-4o"}',
                       headers={**p.auth, "content-type": ct})
        assert r.status_code == 200 and r.headers["x-byok-provider"] == "openai", r.text
    r = gw.request("POST", "/v1/chat/completions", data=b'{"model":',
                   headers={**p.auth, "content-type": "application/json"})
    assert assert_json_error(r, 400)["code"] == "invalid_json"


# -- item 7: Idempotency-Key ----------------------------------------------------------

def test_i17_07_repeated_idempotency_key_gets_no_fallback_retry(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    other = gw.provision(keys={"openai": None})
    fresh = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 503, "busy")
    key = "stainless-node-retry-" + secrets.token_hex(8)

    def calls():
        return len(fake_provider.requests("/openai")), len(fake_provider.requests("/openrouter"))

    r = gw.chat(p, headers={"Idempotency-Key": key})
    assert r.status_code == 200 and r.headers["x-byok-route"] == "fallback", r.text
    assert calls() == (1, 1)
    # The client retries with the same key (no x-stainless-retry-count): the
    # provider's own answer, no second call on the operator's key.
    for n in (2, 3):
        r = gw.chat(p, headers={"idempotency-key": key})
        assert r.status_code == 503, r.text
        assert calls() == (n, 1)
    # A new key, or the same key from another project: a first attempt. (p's
    # key has failed 3 times in 10 s, so its breaker is open — issue 14 — and
    # p's next requests skip it: the other projects show the first attempts.)
    r = gw.chat(fresh, headers={"Idempotency-Key": key + "-2"})
    assert r.status_code == 200 and calls() == (4, 2), r.text
    r = gw.chat(other, headers={"Idempotency-Key": key})
    assert r.status_code == 200 and calls() == (5, 3), r.text
    # No key at all: every request is a first attempt.
    r = gw.chat(other)
    assert r.status_code == 200 and calls() == (6, 4), r.text
    gw.assert_no_leaks(r)


# -- done-when: the official JS SDKs, only base URL and API key changed ----------------
# Installed by `make test-deps` (tests/sdk/package.json, pinned by package-lock.json).
# The catalog is the shipped one pointed at the fake provider, so each request
# must arrive at the provider's real API path.

SDK_SCRIPT = REPO / "tests" / "sdk" / "sdk_i17_uploads.mjs"

ANTHROPIC_SSE = "".join(
    f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in [
        {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-latest",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi from"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": " fake anthropic"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ])


def shipped_gateway(gateway, fake_provider, keys=("openai", "anthropic")):
    text, providers = shipped_catalog_on(fake_provider.base)
    gw = gateway(providers=text)
    p = gw.provision(keys={pid: providers[pid]["key_prefix"] + secrets.token_hex(20)
                           for pid in keys})
    gw.track(p.gateway_key)
    return gw, p


def run_sdk(gw, p, case):
    assert (REPO / "tests" / "sdk" / "node_modules" / "openai").exists(), \
        "run `make test-deps` (installs the pinned SDKs in tests/sdk)"
    out = subprocess.run(["node", str(SDK_SCRIPT), gw.url(""), p.gateway_key, case],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_clean(gw, p, fake_provider):
    for rec in fake_provider.requests():
        assert p.gateway_key not in rec.raw_text()
    gw.assert_no_leaks()


def test_i17_03_openai_sdk_transcription_upload_through_v1(gateway, fake_provider):
    gw, p = shipped_gateway(gateway, fake_provider)
    fake_provider.set_rule("/openai/v1/audio/transcriptions", body={"text": "hello from fake audio"})
    got = run_sdk(gw, p, "transcription")
    assert got["text"] == "hello from fake audio"
    rec = fake_provider.last("/openai")
    assert rec.path == "/openai/v1/audio/transcriptions"
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    form = parse_form(rec.body, rec.headers["content-type"])
    assert form["model"] == b"gpt-4o-transcribe"
    assert len(form["file"]) == got["bytes"]
    assert hashlib.sha256(form["file"]).hexdigest() == got["sha"]
    assert_clean(gw, p, fake_provider)


def test_i17_03_openai_sdk_file_upload_goes_to_the_projects_openai(gateway, fake_provider):
    """/v1/files names no model: the project's provider (its only key here;
    with several, its default_provider setting), never the operator's key."""
    gw, p = shipped_gateway(gateway, fake_provider, keys=("openai",))
    fake_provider.set_rule("/openai/v1/files", body={
        "id": "file-fake1", "object": "file", "bytes": 50, "created_at": 0,
        "filename": "batch.jsonl", "purpose": "batch", "status": "processed"})
    assert run_sdk(gw, p, "file_upload") == {"id": "file-fake1"}
    rec = fake_provider.last()
    assert rec.path == "/openai/v1/files"
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert parse_form(rec.body, rec.headers["content-type"])["purpose"] == b"batch"
    assert fake_provider.requests("/openrouter") == []
    assert_clean(gw, p, fake_provider)


def test_i17_sdk_openai_v1_stream_embeddings_models_and_native_base(gateway, fake_provider):
    gw, p = shipped_gateway(gateway, fake_provider)
    fake_provider.stream("/openai/v1/chat/completions", chunks=3)
    assert run_sdk(gw, p, "chat_stream") == {"text": "tok0 tok1 tok2 "}
    assert fake_provider.last("/openai").path == "/openai/v1/chat/completions"

    fake_provider.set_rule("/openai/v1/embeddings", body={
        "object": "list", "model": "text-embedding-3-small",
        # the SDK asks for base64 floats unless told otherwise
        "data": [{"object": "embedding", "index": 0,
                  "embedding": base64.b64encode(struct.pack("<3f", 0.1, 0.2, 0.3)).decode()}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1}})
    assert run_sdk(gw, p, "embeddings") == {"dims": 3}
    assert fake_provider.last("/openai").path == "/openai/v1/embeddings"

    # Bodiless: the project's default_provider (it has two keys).
    r = gw.admin("PATCH", f"/projects/{p.pid}", {"default_provider": "openai"})
    assert r.status_code == 200, r.text
    fake_provider.set_rule("/openai/v1/models", body={"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openai"}]})
    assert run_sdk(gw, p, "models") == {"ids": ["gpt-4o-mini"]}
    rec = fake_provider.last()
    assert (rec.method, rec.path) == ("GET", "/openai/v1/models")

    fake_provider.reset()
    assert run_sdk(gw, p, "openai_native") == {"content": "hello from openai"}
    rec = fake_provider.last()
    assert rec.path == "/openai/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert_clean(gw, p, fake_provider)


def test_i17_07_openai_sdk_retries_do_not_multiply_on_the_operator_key(gateway, fake_provider):
    """maxRetries 2, the project's provider and the fallback both failing:
    3 calls on the tenant's key, 1 fallback (the first attempt), not 3 + 3."""
    gw, p = shipped_gateway(gateway, fake_provider)
    fake_provider.fail("/openai", 503, "busy")
    fake_provider.fail("/openrouter", 503, "busy too")
    assert run_sdk(gw, p, "retries") == {"status": 503}
    tenant, operator = fake_provider.requests("/openai"), fake_provider.requests("/openrouter")
    assert len(tenant) == 3 and len(operator) == 1, (len(tenant), len(operator))
    # The SDK's own retry marker reached the gateway (and the provider).
    assert [r.headers.get("x-stainless-retry-count") for r in tenant] == ["0", "1", "2"]
    assert_clean(gw, p, fake_provider)


def test_i17_sdk_anthropic_stream_on_native_base(gateway, fake_provider):
    gw, p = shipped_gateway(gateway, fake_provider)
    fake_provider.set_rule("/anthropic", body=ANTHROPIC_SSE,
                           headers={"content-type": "text/event-stream"})
    assert run_sdk(gw, p, "anthropic_stream") == {"text": "hi from fake anthropic",
                                                  "stop": "end_turn"}
    rec = fake_provider.last("/anthropic")
    assert rec.path == "/anthropic/v1/messages"
    assert rec.headers["x-api-key"] == p.keys["anthropic"]
    assert rec.json()["stream"] is True
    assert_clean(gw, p, fake_provider)
