"""A chat endpoint for your own users: they upload files, then send messages that name them.

The server passes each conversation through ``nvmedia.rewrite_messages(..., local_root=UPLOADS)``,
so a message can only make it read the files its users uploaded: ``../../etc/passwd``, an
absolute path or a link leading out is refused (400) with the same error whether it exists or
not. Standard library only (``http.server``); the same two handlers fit FastAPI or Starlette.

    python examples/upload_server.py --emulate            # serve, run a short demo as a client, stop
    python examples/upload_server.py --emulate --serve    # keep serving on http://127.0.0.1:8000
    python examples/upload_server.py --serve              # forward to the real service (NVIDIA_API_KEY)

    POST /upload  body: the file, header X-Filename    -> {"name": "3f2a9c1e-photo.png"}
    POST /chat    {"messages": [...]} naming uploads    -> the chat completion, or 400 {"error": {code, message, hint}}
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import uuid
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from demo import MODEL, inputs, parser, service

import nvmedia

MAX_UPLOAD = 200 << 20


class ChatServer(ThreadingHTTPServer):
    """Where uploads go, and where conversations are sent."""

    def __init__(self, port: int, uploads: Path, chat_url: str, key: str, media: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.uploads, self.chat_url, self.key, self.media = uploads, chat_url, key, media


class Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD:
            self.reply(413, {"error": {"code": "too_large", "message": f"{length} bytes; at most {MAX_UPLOAD}"}})
            return
        body = self.rfile.read(length)
        if self.path == "/upload":
            self.upload(body)
        elif self.path == "/chat":
            self.chat(json.loads(body))
        else:
            self.reply(404, {"error": {"code": "not_found", "message": self.path}})

    def upload(self, data: bytes) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(self.headers.get("X-Filename", "upload")))
        name = f"{uuid.uuid4().hex[:8]}-{safe}"
        (self.server.uploads / name).write_bytes(data)
        self.reply(200, {"name": name})

    def chat(self, request: dict[str, Any]) -> None:
        try:
            with nvmedia.rewrite_messages(
                request["messages"], local_root=self.server.uploads, **self.server.media
            ) as rw:
                answer = httpx.post(
                    self.server.chat_url,
                    json={"model": request.get("model", MODEL), "messages": rw.messages},
                    headers={"Authorization": f"Bearer {self.server.key}", **rw.headers},
                    timeout=300,
                )
        except nvmedia.NVMediaError as exc:  # the user's message is at fault: say what and where
            self.reply(400, {"error": exc.to_dict()})
            return
        self.reply(answer.status_code, answer.json())


def demo(base: str, photo: Path, memo: Path) -> None:
    """What a client does: upload two files, ask about them, then try to read outside the uploads."""
    names = {}
    for path in (photo, memo):
        names[path.name] = httpx.post(
            f"{base}/upload", content=path.read_bytes(), headers={"X-Filename": path.name}
        ).json()["name"]
        print(f"uploaded {path.name} as {names[path.name]}")
    content = f"What is in <img src='{names['photo.png']}' /> and in <audio src='{names['memo.wav']}' />?"
    answer = httpx.post(f"{base}/chat", json={"messages": [{"role": "user", "content": content}]}, timeout=300).json()
    print("answer:", answer["choices"][0]["message"]["content"])
    for sneaky in ("../../../../etc/passwd", "/etc/hostname", "../../../../no/such/file"):
        refused = httpx.post(f"{base}/chat", json={"messages": [{"role": "user", "content": f"<img src='{sneaky}'>"}]})
        error = refused.json()["error"]
        print(f"refused {sneaky}: {refused.status_code} {error['code']}: {error['message']}")


def main() -> None:
    command_line = parser(__doc__)
    command_line.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C (default: run the demo)")
    command_line.add_argument("--port", type=int, default=8000, help="the port to serve on with --serve")
    args = command_line.parse_args()
    with ExitStack() as stack:
        uploads = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uploads-")))
        svc = service(stack, args.emulate)
        chat_url = f"{svc.base_url}/chat/completions"
        server = ChatServer(args.port if args.serve else 0, uploads, chat_url, svc.key, svc.media)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            if args.serve:
                print(f"serving on {base} (uploads in {uploads}); Ctrl-C stops", flush=True)
                threading.Event().wait()
            else:
                demo(base, *inputs(stack, args.files))
                if svc.emulator is not None:
                    print("assets left on the service:", len(svc.emulator.assets()))
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
