#!/usr/bin/env python3
"""DEMO provider for `make run`: a local, offline stand-in for an LLM API so
the printed walkthrough gives real answers without internet. It is not a
model: it answers every prompt with a fixed sentence that quotes the prompt.

It speaks the wire formats the gateway forwards:
  GET  /v1/models                          OpenAI model list
  POST /v1/chat/completions                OpenAI chat (JSON, or SSE word by word)
  POST /v1/completions                     OpenAI legacy completions (JSON)
  POST /v1/embeddings                      OpenAI embeddings (8 dimensions)
  POST /v1/messages                        Anthropic messages (JSON, or SSE events)
Every call must carry the demo key (`Authorization: Bearer demo-…` or
`x-api-key: demo-…`), read from the file given with --key-file; others get 401.

    demo_provider.py --port 8090 --key-file .run/demo.key
"""

import argparse
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = ["demo-chat", "demo-embed"]
WORD_DELAY = 0.05  # seconds between streamed words: visibly a stream


def reply_text(messages) -> str:
    prompt = ""
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            prompt = str(content or "")
            break
    prompt = " ".join(prompt.split())[:80]
    return f'This is the byok demo provider (not a real model). You said: "{prompt}"'


def usage(prompt: str, completion: str) -> dict:
    p, c = len(prompt.split()) or 1, len(completion.split())
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "byok-demo-provider"
    key = ""

    def log_message(self, fmt, *args):  # keep the terminal quiet
        pass

    # -- plumbing -----------------------------------------------------------

    def authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else self.headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode(), self.key.encode())

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def read_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def guard(self):
        if not self.authorized():
            self.send_json(401, {"error": {"message": "invalid demo key", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})
            return None
        body = self.read_json() if self.command == "POST" else {}
        if body is None:
            self.send_json(400, {"error": {"message": "body is not a JSON object",
                                           "type": "invalid_request_error"}})
        return body

    # -- routes -------------------------------------------------------------

    def do_GET(self):
        if self.guard() is None:
            return
        if self.path.split("?")[0] == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "byok-demo"} for m in MODELS]})
        else:
            self.send_json(404, {"error": {"message": "no such demo route", "type": "not_found"}})

    def do_POST(self):
        body = self.guard()
        if body is None:
            return
        route = {
            "/v1/chat/completions": self.chat,
            "/v1/completions": self.completions,
            "/v1/embeddings": self.embeddings,
            "/v1/messages": self.messages,
        }.get(self.path.split("?")[0])
        if route is None:
            self.send_json(404, {"error": {"message": "no such demo route", "type": "not_found"}})
            return
        route(body)

    def chat(self, body):
        model = str(body.get("model", "demo-chat"))
        text = reply_text(body.get("messages"))
        prompt = json.dumps(body.get("messages", ""))
        created = int(time.time())
        if not body.get("stream"):
            self.send_json(200, {
                "id": "chatcmpl-demo", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage(prompt, text)})
            return
        self.start_sse()
        base = {"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": created, "model": model}
        words = text.split(" ")
        for i, w in enumerate(words):
            delta = {"content": (w if i == 0 else " " + w)}
            if i == 0:
                delta["role"] = "assistant"
            self.chunk("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta,
                                                                   "finish_reason": None}]}) + "\n\n")
            time.sleep(WORD_DELAY)
        self.chunk("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {},
                                                               "finish_reason": "stop"}]}) + "\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            self.chunk("data: " + json.dumps({**base, "choices": [], "usage": usage(prompt, text)}) + "\n\n")
        self.chunk("data: [DONE]\n\n")
        self.end_chunks()

    def completions(self, body):
        text = reply_text([{"role": "user", "content": body.get("prompt", "")}])
        self.send_json(200, {"id": "cmpl-demo", "object": "text_completion", "created": int(time.time()),
                             "model": str(body.get("model", "demo-chat")),
                             "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                             "usage": usage(str(body.get("prompt", "")), text)})

    def embeddings(self, body):
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, item in enumerate(inputs):
            digest = hashlib.sha256(str(item).encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [round(b / 255.0 - 0.5, 4) for b in digest[:8]]})
        n = sum(len(str(x).split()) for x in inputs) or 1
        self.send_json(200, {"object": "list", "data": data, "model": str(body.get("model", "demo-embed")),
                             "usage": {"prompt_tokens": n, "total_tokens": n}})

    def messages(self, body):
        model = str(body.get("model", "demo-chat"))
        text = reply_text(body.get("messages"))
        u = usage(json.dumps(body.get("messages", "")), text)
        if not body.get("stream"):
            self.send_json(200, {
                "id": "msg_demo", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"]}})
            return
        self.start_sse()

        def event(name, data):
            self.chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n")
        event("message_start", {"type": "message_start", "message": {
            "id": "msg_demo", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": 0}}})
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}})
        for i, w in enumerate(text.split(" ")):
            event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": w if i == 0 else " " + w}})
            time.sleep(WORD_DELAY)
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": u["completion_tokens"]}})
        event("message_stop", {"type": "message_stop"})
        self.end_chunks()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--pid-file")
    args = ap.parse_args()
    with open(args.key_file) as f:
        Handler.key = f.read().strip()
    if not Handler.key.startswith("demo-"):
        print("demo_provider: the key file must hold a demo-... key", file=sys.stderr)
        return 1
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.pid_file:
        import os
        with open(args.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
