"""A stand-in for the Hugging Face Hub on 127.0.0.1: what `huggingface_hub.hf_hub_download`
asks of it (HEAD, then GET, of /OWNER/REPO/resolve/REVISION/FILE), answered from files the test
wrote. Pointed at with HF_ENDPOINT; no test leaves the machine."""

import contextlib
import hashlib
import http.server
import re
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the one revision every repo has
_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict  # {(repo, filename): bytes}
    requests: list

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, with_body: bool):
        self.requests.append((self.command, self.path))
        match = _PATH.match(self.path.split("?")[0])
        content = match and self.files.get((match["repo"], match["file"]))
        if match is None or match["revision"] not in ("main", COMMIT) or content is None:
            self.send_response(404)
            known_repo = match and any(repo == match["repo"] for repo, _ in self.files)
            self.send_header("X-Error-Code", "EntryNotFound" if known_repo else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if with_body:
            self.wfile.write(content)

    def do_HEAD(self):
        self._answer(with_body=False)

    def do_GET(self):
        self._answer(with_body=True)


@contextlib.contextmanager
def serving(files: dict):
    """Serves {(repo, filename): bytes}; yields (endpoint URL, the requests it answered)."""
    handler = type("Handler", (_Handler,), {"files": files, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
