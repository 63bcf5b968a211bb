"""The service started as a user starts it (`serve.py` in a subprocess on 127.0.0.1, a free
port), with a client in the standard library, and a small photo-folder run to serve: used by
tests/test_serve.py and tools/serve_load.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_folder_run(photos: str, workdir: str, cache_dir: str, model: str = "resnet8",
                     image_size: int = 32, eval_resize: int = 36, steps: int = 30,
                     in_process: bool = True) -> None:
    """A run of configs/folder.py on the photo folder. The defaults, resnet8 (the smallest
    net) for 30 steps at 32 px, tell the 3 classes of tools/image_folders.py apart: what the
    tests need, where the service's plumbing, not the depth, is under test. `in_process=False`
    runs train.py instead, leaving this process without the training's threads and state (a
    benchmark's client)."""
    overrides = dict(data_dir=photos, model=model, image_size=image_size,
                     eval_resize=eval_resize, num_train_steps=steps, batch_size=16,
                     eval_batch_size=16, progress_bar=False, compilation_cache_dir=cache_dir)
    if not in_process:
        subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--config",
                        os.path.join(REPO, "configs", "folder.py"), f"--workdir={workdir}",
                        *(f"--config.{key}={value}" for key, value in overrides.items())],
                       check=True, cwd=REPO, capture_output=True)
        return
    from resnet_jax.configs import folder
    from resnet_jax.train import loop

    config = folder.get_config()
    config.update(**overrides)
    loop.train_and_evaluate(config, workdir)


class Server:
    """`python serve.py ARGS` on a free port; `request` answers (status, headers, body)."""

    def __init__(self, args: list[str], api_key: str | None = None, ready_s: float = 240):
        self.api_key = api_key
        env = dict(os.environ, PYTHONPATH=REPO)
        command = [sys.executable, os.path.join(REPO, "serve.py"), "--port=0", *args]
        if api_key:
            command.append(f"--api_key={api_key}")
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stderr_lines: list[str] = []
        found = threading.Event()
        self.port = None

        def read():
            for line in self.process.stderr:
                self.stderr_lines.append(line)
                match = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120) or self.port is None:
            self.stop()
            raise AssertionError("the server did not start:\n" + self.log())
        self.wait_ready(ready_s)

    def log(self) -> str:
        return "".join(self.stderr_lines)[-4000:]

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("the server exited:\n" + self.log())
            status, _, _ = self.request("GET", "/readyz", authorize=False)
            if status == 200:
                return
            time.sleep(0.2)
        raise AssertionError("the server never turned ready:\n" + self.log())

    def request(self, method: str, path: str, data: bytes | None = None,
                content_type: str | None = None, authorize: bool = True,
                headers: dict | None = None, timeout: float = 120):
        """(status, headers, body: the parsed JSON where it is JSON, else bytes)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method, headers=dict(headers or {}))
        if content_type:
            request.add_header("Content-Type", content_type)
        if authorize and self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, answer, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer, body = error.code, error.headers, error.read()
        if answer.get("content-type", "").startswith("application/json"):
            body = json.loads(body)
        return status, answer, body

    def post_image(self, path: str, endpoint: str = "/v1/classify", **kwargs):
        with open(path, "rb") as f:
            return self.request("POST", endpoint, f.read(), "image/jpeg", **kwargs)

    def metric(self, name: str, **labels) -> float:
        """The value of one sample of /metrics (0 if absent)."""
        _, _, text = self.request("GET", "/metrics")
        text = text.decode() if isinstance(text, bytes) else text
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "")
        match = re.search(r"^" + pattern + r" (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def multipart(fields: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request: name -> (file name, bytes)."""
    boundary = "resnetjaxtestboundary"
    body = b""
    for name, (filename, data) in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                 ).encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
