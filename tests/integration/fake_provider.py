"""In-process fake LLM provider for the integration tests.

One ThreadingHTTPServer serves every provider of the test catalog by path
prefix: the catalog points provider <id> at http://127.0.0.1:<port>/<id>.
Every request is recorded (method, path with query, lower-cased headers,
body) before it is answered, so tests assert on what the provider received.

Answers follow rules chosen per path prefix (longest prefix wins):
  - default: 200 with an OpenAI-style chat completion echoing the model;
  - fixed status + body (+ headers);
  - SSE streaming: N `data: {...}` chunks `chunk_delay` seconds apart, then
    `data: [DONE]`, sent with chunked transfer encoding;
  - `delay` seconds before the answer starts;
  - `hold` (a threading.Event the test sets): a plain answer waits for it
    before it starts, a stream after its first chunk, so a test can prove
    ordering ("chunk 1 reached the client while the provider still held
    the rest") instead of measuring time. HOLD_TIMEOUT only guards against
    a test that never releases; reset() releases every hold;
  - `cut`: a stream drops the connection after its first chunk (and the
    hold), without the terminating chunk.
"""

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple


@dataclass
class Recorded:
    method: str
    path: str  # with the query string
    headers: Dict[str, str]  # lower-cased names; repeated headers joined by ", "
    header_list: List[Tuple[str, str]]  # as received, names lower-cased
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def provider(self) -> str:
        """First path segment: the provider id the request was routed to."""
        return self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]

    @property
    def route_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.path.split("?", 1)[1] if "?" in self.path else ""

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def raw_text(self) -> str:
        """Everything the provider saw, for secret scans."""
        heads = "\n".join(f"{k}: {v}" for k, v in self.header_list)
        return f"{self.method} {self.path}\n{heads}\n\n" + self.body.decode("utf-8", "replace")


@dataclass
class Rule:
    status: int = 200
    body: Optional[bytes] = None  # None = default chat completion
    headers: Dict[str, str] = field(default_factory=dict)
    stream_chunks: int = 0  # > 0 = answer as SSE with that many chunks
    chunk_delay: float = 0.0
    delay: float = 0.0
    times: Optional[int] = None  # apply this many times, then drop the rule
    hold: Optional[threading.Event] = None
    cut: bool = False


HOLD_TIMEOUT = 60.0


def chat_completion(model: str, provider: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"hello from {provider}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }


class FakeProvider:
    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._records: List[Recorded] = []
        self._rules: Dict[str, Rule] = {}
        handler = _make_handler(self)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.host = "127.0.0.1"
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # -- configuration -------------------------------------------------------

    def set_rule(self, prefix: str, status: int = 200, body=None, headers=None,
                 stream_chunks: int = 0, chunk_delay: float = 0.0, delay: float = 0.0,
                 times: Optional[int] = None, hold: Optional[threading.Event] = None,
                 cut: bool = False) -> None:
        """Answer requests whose path starts with `prefix` (e.g. "/openai")."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"content-type": "application/json", **(headers or {})}
        elif isinstance(body, str):
            body = body.encode()
        with self._lock:
            self._rules[prefix] = Rule(status, body, dict(headers or {}), stream_chunks,
                                       chunk_delay, delay, times, hold, cut)

    def fail(self, prefix: str, status: int, message: str = "fake failure") -> None:
        self.set_rule(prefix, status=status,
                      body={"error": {"message": message, "type": "fake", "code": status}})

    def stream(self, prefix: str, chunks: int = 5, chunk_delay: float = 0.0,
               hold: Optional[threading.Event] = None, cut: bool = False) -> None:
        self.set_rule(prefix, stream_chunks=chunks, chunk_delay=chunk_delay, hold=hold, cut=cut)

    def reset(self) -> None:
        with self._lock:
            for rule in self._rules.values():
                if rule.hold is not None:
                    rule.hold.set()
            self._rules.clear()
            self._records.clear()

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    # -- inspection ----------------------------------------------------------

    def requests(self, prefix: str = "") -> List[Recorded]:
        with self._lock:
            return [r for r in self._records if r.path.startswith(prefix)]

    def last(self, prefix: str = "") -> Recorded:
        got = self.requests(prefix)
        assert got, f"fake provider received no request under {prefix!r}"
        return got[-1]

    def wait_for(self, count: int = 1, prefix: str = "", timeout: float = 5.0) -> List[Recorded]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self._records if r.path.startswith(prefix)]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    return got
                self._cond.wait(left)

    def all_text(self) -> str:
        return "\n".join(r.raw_text() for r in self.requests())

    # -- internals -----------------------------------------------------------

    def _record(self, rec: Recorded) -> Rule:
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()
            best = None
            for prefix in self._rules:
                if rec.path.startswith(prefix) and (best is None or len(prefix) > len(best)):
                    best = prefix
            if best is None:
                return Rule()
            rule = self._rules[best]
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    del self._rules[best]
            return rule

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _make_handler(fake: FakeProvider):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-provider/1"

        def log_message(self, *args):  # quiet
            pass

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self):
            body = self._read_body()
            header_list = [(k.lower(), v) for k, v in self.headers.items()]
            headers: Dict[str, str] = {}
            for k, v in header_list:
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            rec = Recorded(self.command, self.path, headers, header_list, body)
            rule = fake._record(rec)
            try:
                self._answer(rec, rule)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _model(self, rec: Recorded) -> str:
            try:
                model = rec.json().get("model")
                return model if isinstance(model, str) else "unknown"
            except Exception:
                return "unknown"

        def _answer(self, rec: Recorded, rule: Rule):
            if rule.delay:
                time.sleep(rule.delay)
            if rule.hold is not None and not rule.stream_chunks:
                rule.hold.wait(HOLD_TIMEOUT)
            if rule.stream_chunks:
                return self._answer_stream(rec, rule)
            if rule.body is None:
                body = json.dumps(chat_completion(self._model(rec), rec.provider)).encode()
                headers = {"content-type": "application/json"}
            else:
                body, headers = rule.body, {}
            headers.update(rule.headers)
            self.send_response(rule.status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("x-fake-provider", rec.provider)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()

        def _answer_stream(self, rec: Recorded, rule: Rule):
            model = self._model(rec)
            self.send_response(rule.status)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("x-fake-provider", rec.provider)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

            def chunk(data: bytes):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            for i in range(rule.stream_chunks):
                if i:
                    time.sleep(rule.chunk_delay)
                event = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}],
                }
                chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
                if i == 0 and rule.hold is not None:
                    rule.hold.wait(HOLD_TIMEOUT)
                if i == 0 and rule.cut:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
            chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler


# --- raw pieces (issue 13: usage split across reads) --------------------------
# fake.pieces(prefix, [b"...", ...], content_type) answers with exactly these
# byte pieces, each written and flushed as its own HTTP chunk, so a usage
# object can be cut anywhere between two TCP reads of the gateway.

def _pieces(self, prefix: str, pieces, content_type: str = "text/event-stream",
            status: int = 200, times: Optional[int] = None) -> None:
    self.set_rule(prefix, status=status, times=times)
    with self._lock:
        self._rules[prefix].pieces = [bytes(p) for p in pieces]
        self._rules[prefix].content_type = content_type


FakeProvider.pieces = _pieces
_base_make_handler = _make_handler


def _make_handler(fake: FakeProvider):  # noqa: F811 (wraps the original)
    base = _base_make_handler(fake)

    class Handler(base):
        def _answer(self, rec: Recorded, rule: Rule):
            pieces = getattr(rule, "pieces", None)
            if pieces is None:
                return super()._answer(rec, rule)
            self.send_response(rule.status)
            self.send_header("content-type", rule.content_type)
            self.send_header("x-fake-provider", rec.provider)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for p in pieces:
                if p:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
                    self.wfile.flush()
                    time.sleep(0.002)  # separate reads on the gateway side
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


# --- per-key answers (issue 14: several keys per provider) ---------------------
# fake.key_rule(key, status, body, headers, times) answers requests that carry
# `key` (Authorization: Bearer <key> or x-api-key) this way, whatever the path.

def _key_rule(self, key: str, status: int = 200, body=None, headers=None,
              times: Optional[int] = None) -> None:
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers = {"content-type": "application/json", **(headers or {})}
    with self._lock:
        if not hasattr(self, "_key_rules"):
            self._key_rules = {}
        self._key_rules[key] = Rule(status, body, dict(headers or {}), times=times)


def _key_of(rec: Recorded) -> str:
    auth = rec.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else rec.headers.get("x-api-key", "")


def _used_keys(self, prefix: str = "") -> List[str]:
    """The provider key each recorded request carried, in order."""
    return [_key_of(r) for r in self.requests(prefix)]


_base_reset = FakeProvider.reset


def _reset_with_key_rules(self) -> None:
    _base_reset(self)
    with self._lock:
        self._key_rules = {}


FakeProvider.key_rule = _key_rule
FakeProvider.used_keys = _used_keys
FakeProvider.reset = _reset_with_key_rules
_pieces_make_handler = _make_handler


def _make_handler(fake: FakeProvider):  # noqa: F811 (wraps the one above)
    base = _pieces_make_handler(fake)

    class Handler(base):
        def _answer(self, rec: Recorded, rule: Rule):
            key = _key_of(rec)
            with fake._lock:
                rules = getattr(fake, "_key_rules", {})
                kr = rules.get(key)
                if kr is not None and kr.times is not None:
                    kr.times -= 1
                    if kr.times <= 0:
                        del rules[key]
            return super()._answer(rec, kr if kr is not None else rule)

    return Handler
