"""A JSON-RPC client speaking LSP's wire protocol to a server subprocess (for the tests).

Frames are `Content-Length: N\\r\\n\\r\\n` + JSON, both ways. A reader thread files responses
by id; requests the server sends to the client are answered with null.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Sequence
from typing import IO, Any


class LspError(Exception):
    """An error response: `code` and `message` as the server sent them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LspClient:
    """Start `cmd`, talk LSP to it; `close()` shuts it down."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], stderr: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env
        )
        self._next = 0
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.notifications: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _send(self, msg: dict[str, Any]) -> None:
        data = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
            self.proc.stdin.flush()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return  # server gone
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            assert length is not None, "frame without Content-Length"
            msg = json.loads(out.read(length))
            if "method" in msg and "id" in msg:  # a request to us: say nothing useful
                self._send({"id": msg["id"], "result": None})
            elif "method" in msg:
                self.notifications.append(msg)
            elif msg.get("id") in self._waiting:
                self._waiting[msg["id"]].put(msg)

    def request_async(self, method: str, params: Any) -> int:
        """Send a request; `wait(id)` for its answer."""
        self._next += 1
        self._waiting[self._next] = queue.Queue()
        self._send({"id": self._next, "method": method, "params": params})
        return self._next

    def wait(self, msg_id: int, timeout: float = 600) -> Any:
        # the queue stays filed until the answer is in: the reader looks it up by id
        msg = self._waiting[msg_id].get(timeout=timeout)
        del self._waiting[msg_id]
        if "error" in msg:
            raise LspError(msg["error"]["code"], msg["error"]["message"])
        return msg.get("result")

    def request(self, method: str, params: Any, timeout: float = 600) -> Any:
        return self.wait(self.request_async(method, params), timeout)

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def initialize(self, encodings: list[str] | None = None) -> dict[str, Any]:
        general = {"positionEncodings": encodings} if encodings else {}
        caps = {"general": general, "textDocument": {"inlineCompletion": {}, "completion": {}}}
        result = self.request(
            "initialize", {"processId": None, "rootUri": None, "capabilities": caps}
        )
        self.notify("initialized", {})
        return result

    def open(self, uri: str, text: str, language: str = "python") -> None:
        doc = {"uri": uri, "languageId": language, "version": 1, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": doc})

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=30)
            self.notify("exit", None)
            self.proc.wait(30)
        except Exception:  # noqa: BLE001 - a test failure already; make sure it ends
            self.proc.kill()
            self.proc.wait(10)
