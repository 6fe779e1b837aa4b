"""Issue 17 item 3 (uploads on /v1) and item 7 (Idempotency-Key): multipart
bodies are routed by their "model" field, read as a stream (a spilled body
never comes back into memory) and rewritten for the fallback provider; any
other non-JSON body goes through untouched; a request whose Idempotency-Key
the gateway saw within the last minute gets no fallback retry of ours."""

import secrets
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from harness import assert_json_error

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
    data = audio(5000)
    for headers, provider in (({"x-byok-provider": "anthropic"}, "anthropic"),
                              ({}, "openai")):  # the project's first provider
        r = gw.request("POST", "/v1/audio/speech-raw", data=data,
                       headers={**p.auth, "content-type": "audio/mpeg", **headers})
        assert r.status_code == 200, r.text
        rec = fake_provider.last()
        assert rec.provider == provider, rec.path
        assert rec.body == data and rec.headers["content-type"] == "audio/mpeg"
        assert rec.headers.get("x-byok-provider") is None


def test_i17_03_bad_multipart_is_a_400_and_reaches_no_provider(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    body, ctype = multipart([("model", "gpt-4o-transcribe")])
    cases = [
        (body[:-10], ctype, "it ends before its closing boundary"),
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
    # A new key, or the same key from another project: a first attempt.
    r = gw.chat(p, headers={"Idempotency-Key": key + "-2"})
    assert r.status_code == 200 and calls() == (4, 2), r.text
    r = gw.chat(other, headers={"Idempotency-Key": key})
    assert r.status_code == 200 and calls() == (5, 3), r.text
    # No key at all: every request is a first attempt.
    r = gw.chat(p)
    assert r.status_code == 200 and calls() == (6, 4), r.text
    gw.assert_no_leaks(r)
