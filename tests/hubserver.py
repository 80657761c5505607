"""A loopback HTTP server that speaks enough of the Hugging Face Hub's download protocol for
huggingface-hub's own client (resolve HEAD/GET with X-Repo-Commit and ETag, the tree API)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self) -> None:
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> files
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch -> commit
        self.corrupt: set[tuple[str, str]] = set()  # (repo, filename) served with altered bytes
        self.gets: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _handle(self, head: bool) -> None:
                path = unquote(urlparse(self.path).path)
                m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)/?$", path)
                if m:
                    files = hub._files(m.group(1), m.group(2))
                    if files is None:
                        return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, head)
                    tree = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()} for n, b in files.items()]
                    return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if not m:
                    return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
                repo, rev, name = m.groups()
                commit = hub._commit(repo, rev)
                files = hub._files(repo, rev)
                if files is None or commit is None:
                    return self._send(404, b"", {"X-Error-Code": "RevisionNotFound"}, head)
                if name not in files:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
                data = files[name]
                etag = hashlib.sha256(data).hexdigest()
                if (repo, name) in hub.corrupt:
                    data = data[:-8] + b"corrupt!"
                if not head:
                    hub.gets.append(name)
                self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
                                       "Content-Type": "application/octet-stream"}, head)

            def do_HEAD(self) -> None:
                self._handle(head=True)

            def do_GET(self) -> None:
                self._handle(head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_commit(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()
                              + str(len(self.commits.get(repo, {}))).encode()).hexdigest()
        self.commits.setdefault(repo, {})[commit] = dict(files)
        self.refs.setdefault(repo, {})[branch] = commit
        return commit

    def _commit(self, repo: str, rev: str) -> str | None:
        if repo not in self.commits:
            return None
        return self.refs[repo].get(rev) or (rev if rev in self.commits[repo] else None)

    def _files(self, repo: str, rev: str) -> dict[str, bytes] | None:
        commit = self._commit(repo, rev)
        return None if commit is None else self.commits[repo][commit]

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
