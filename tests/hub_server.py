"""A stand-in for the Hugging Face Hub on 127.0.0.1: the file endpoints huggingface_hub downloads from.

    with HubServer() as hub:
        hub.add_repo("openai-community/gpt2", folder)
        env = {"HF_ENDPOINT": hub.url, ...}       # then hf_hub_download(...) in a subprocess
        hub.requests        # ["HEAD /openai-community/gpt2/resolve/main/config.json", "GET ...", ...]

It answers `HEAD` and `GET /{repo}/resolve/{revision}/{filename}` the way the Hub does: Content-Length,
ETag and X-Repo-Commit (40 hex digits) on a file, and a 404 whose X-Error-Code (EntryNotFound,
RepoNotFound, RevisionNotFound) tells huggingface_hub which error to raise. Anything else is a 404.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RESOLVE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}  # repo id -> folder whose files it serves
        self.requests: list[str] = []  # "METHOD /path", in the order they arrived
        self.authorizations: set[str] = set()  # the Authorization headers sent, if any
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, folder: Path) -> None:
        self.repos[repo_id] = Path(folder)

    def commit(self, repo_id: str) -> str:
        """The repo's (fixed) commit id: 40 hex digits, like a git sha1."""
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def files_got(self) -> list[str]:
        """The file names whose contents were downloaded (GET requests on /resolve/), in order."""
        return [m["filename"] for line in self.requests if line.startswith("GET ")
                if (m := RESOLVE.match(line.split(" ", 1)[1]))]

    def log(self, line: str, authorization: str | None) -> None:
        with self._lock:
            self.requests.append(line)
            if authorization:
                self.authorizations.add(authorization)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self.answer(send_body=False)

        def do_GET(self) -> None:
            self.answer(send_body=True)

        def answer(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            hub.log(f"{self.command} {path}", self.headers.get("Authorization"))
            match = RESOLVE.match(path)
            if match is None:
                return self.not_found(None, "Not Found")
            repo, revision, filename = match["repo"], match["revision"], match["filename"]
            if repo not in hub.repos:
                return self.not_found("RepoNotFound", "Repository not found")
            commit = hub.commit(repo)
            if revision not in ("main", commit):
                return self.not_found("RevisionNotFound", "Invalid rev id", commit)
            file = hub.repos[repo] / filename
            if ".." in Path(filename).parts or not file.is_file():
                return self.not_found("EntryNotFound", "Entry not found", commit)
            body = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def not_found(self, error_code: str | None, message: str, commit: str | None = None) -> None:
            body = f'{{"error": "{message}"}}'.encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if error_code:
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # the request log above replaces stderr lines
            pass

    return Handler
