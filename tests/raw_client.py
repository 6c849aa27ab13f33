"""A Gradio client at the HTTP level: what a browser tab does, with each step in the caller's hands.

`gradio_client` cannot send NaN (its JSON encoder refuses it) and cannot drop its connections
mid-run on demand; a hostile or crashed client can do both. Used by the app tests and by
`bench/load.py`.
"""

from __future__ import annotations

import json
import threading
import uuid

import httpx

API = "gradio_api"


class RawSession:
    """One browser-like session: a heartbeat stream (so the server can see it leave), uploads and queue calls."""

    def __init__(self, url: str, heartbeat: bool = True):
        self.url = url.rstrip("/") + "/"
        self.session = uuid.uuid4().hex[:11]
        self.http = httpx.Client(timeout=60)
        self._heartbeat: httpx.Response | None = None
        if heartbeat:
            connected = threading.Event()
            threading.Thread(target=self._keep_alive, args=(connected,), daemon=True).start()
            connected.wait(10)

    def _keep_alive(self, connected: threading.Event) -> None:
        try:
            with self.http.stream("GET", f"{self.url}{API}/heartbeat/{self.session}", timeout=None) as response:
                self._heartbeat = response
                connected.set()
                for _ in response.iter_bytes():
                    pass
        except (httpx.HTTPError, RuntimeError):  # closed by leave()
            connected.set()

    def upload(self, path) -> dict:
        with open(path, "rb") as handle:
            response = self.http.post(f"{self.url}{API}/upload", files={"files": handle})
        response.raise_for_status()
        return {
            "path": response.json()[0],
            "orig_name": str(path).rsplit("/", 1)[-1],
            "meta": {"_type": "gradio.FileData"},
        }

    def fn_index(self, api_name: str) -> int:
        config = self.http.get(f"{self.url}config").json()
        return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)

    def join(self, api_name: str, data: list) -> httpx.Response:
        """Join the queue; the body is encoded by `json`, which writes NaN and Infinity as JavaScript does."""
        body = {"data": data, "fn_index": self.fn_index(api_name), "session_hash": self.session, "trigger_id": None}
        return self.http.post(
            f"{self.url}{API}/queue/join", content=json.dumps(body), headers={"content-type": "application/json"}
        )

    def messages(self):
        """The session's queue messages as dicts, as they arrive."""
        with self.http.stream("GET", f"{self.url}{API}/queue/data", params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    yield message
                    if message.get("msg") in ("process_completed", "close_stream"):
                        return

    def call(self, api_name: str, data: list) -> dict:
        """Join and wait: the final message (`success`, `output`, the error's `output.error`), with the
        warnings and notes shown on the way under `logs`."""
        joined = self.join(api_name, data)
        if joined.status_code != 200:
            return {"success": False, "status": joined.status_code, "output": {"error": joined.text}, "logs": []}
        logs = []
        for message in self.messages():
            if message.get("msg") == "log":
                logs.append(message.get("log", ""))
            if message.get("msg") == "process_completed":
                return {**message, "logs": logs}
        return {"success": False, "output": {"error": "the stream closed without a result"}, "logs": logs}

    def leave(self) -> None:
        """Drop every connection at once, as a closed tab or a killed client does."""
        if self._heartbeat is not None:
            self._heartbeat.close()
        self.http.close()


def error_text(message: dict) -> str:
    output = message.get("output") or {}
    return str(output.get("error") or message.get("title") or "")
