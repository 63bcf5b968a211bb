"""The service as a user runs it: `serve.py` on a photo-folder run and a gallery of its train
split, over HTTP on 127.0.0.1. One server (with an API key) serves the tests in order, the last
of which stops it with SIGTERM mid-burst; a second start checks what it kept."""

import concurrent.futures
import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tools.image_folders import write_photo_crops
from tools.served import REPO, Server, multipart, train_folder_run

pytest.importorskip("fastapi", reason="the serve extra")

KEY = "test-key-123"


@pytest.fixture(scope="module")
def served(tmp_path_factory, cache_dir):
    """(photos, workdir, gallery path), the gallery embedded by embed.py from the train split."""
    root = tmp_path_factory.mktemp("serve")
    photos = write_photo_crops(str(root / "photos"), classes=3, train=10, val=4)
    workdir = str(root / "run")
    train_folder_run(photos, workdir, cache_dir)
    gallery = str(root / "gallery.npz")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "embed.py"), f"--workdir={workdir}",
                           f"--output={gallery}", os.path.join(photos, "train")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return photos, workdir, gallery


@pytest.fixture(scope="module")
def server(served):
    _, workdir, gallery = served
    started = Server([f"--workdir={workdir}", f"--gallery={gallery}", "--max_body_mb=1"],
                     api_key=KEY)
    yield started
    started.stop()


def val_images(photos):
    return sorted(glob.glob(os.path.join(photos, "val", "*", "*.jpg")))


def test_classify_equals_predict_and_nothing_compiles_after_ready(served, server):
    photos, workdir, _ = served
    paths = val_images(photos)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "predict.py"),
                           f"--workdir={workdir}", "--json", "--top_k=3", *paths],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = {json.loads(line)["path"]: json.loads(line)["top_k"]
                for line in proc.stdout.splitlines()}

    def classify(item):
        i, path = item
        if i % 2:  # half as the raw body, half as the multipart field "file"
            with open(path, "rb") as f:
                body, content_type = multipart({"file": ("x.jpg", f.read())})
            return path, server.request("POST", "/v1/classify?top_k=3", body, content_type)
        return path, server.post_image(path, "/v1/classify?top_k=3")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # concurrent: batched together
        answers = dict(pool.map(classify, enumerate(paths)))
    for path, (status, _, body) in answers.items():
        assert status == 200, body
        ours, theirs = body["top_k"], expected[path]
        assert [t["class"] for t in ours] == [t["class"] for t in theirs]
        np.testing.assert_allclose([t["probability"] for t in ours],
                                   [t["probability"] for t in theirs], atol=1e-5)
    assert server.metric("resnet_jax_requests_total", endpoint="/v1/classify",
                         status="200") == len(paths)
    assert server.metric("resnet_jax_batch_size_sum") == len(paths)  # each image in a batch
    assert server.metric("resnet_jax_compilations_after_ready") == 0
    status, _, ready = server.request("GET", "/readyz")
    assert ready["compilations_after_ready"] == 0


def test_search_finds_the_nearest_gallery_images(served, server):
    photos, _, gallery = served
    query = val_images(photos)[0]
    status, _, found = server.post_image(query, "/v1/search?top_k=4")
    assert status == 200, found
    status, _, embedded = server.post_image(query, "/v1/embed")
    vector = np.array(embedded["embedding"], np.float32)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    with np.load(gallery) as f:
        paths, rows = f["paths"], f["embeddings"]
    similarity = rows @ vector
    best = np.argsort(-similarity, kind="stable")[:4]
    assert [n["path"] for n in found["neighbors"]] == [str(paths[i]) for i in best]
    np.testing.assert_allclose([n["similarity"] for n in found["neighbors"]],
                               similarity[best], atol=1e-5)
    assert all(n["class"].startswith("class_") for n in found["neighbors"])
    status, _, image = server.request("GET", f"/v1/gallery/{found['neighbors'][0]['index']}"
                                             f"/image")
    with open(found["neighbors"][0]["path"], "rb") as f:
        assert status == 200 and image == f.read()
    assert server.request("GET", "/v1/gallery/100000/image")[0] == 404


def test_the_model_record_says_what_is_served(server):
    status, _, record = server.request("GET", "/v1/model")
    assert status == 200
    assert record["model"] == "resnet8" and record["classes"] == ["class_0", "class_1",
                                                                  "class_2"]
    assert record["task"] == "classification" and record["input"]["shape"] == [32, 32, 3]
    assert record["preprocessing"]["resize_shorter_side"] == 36
    assert record["checkpoint"] == "best" and isinstance(record["step"], int)
    assert record["batch_shapes"] == [1, 2, 4, 8, 16] and record["gallery"]["images"] == 30


def _png(width, height) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_bad_requests_are_one_json_line_and_the_next_is_served(served, server, tmp_path):
    photos, _, _ = served
    good = val_images(photos)[0]
    with open(good, "rb") as f:
        jpeg = f.read()
    bomb = _png(20000, 20000)  # 400 M pixels, a few hundred KB of PNG
    cases = [
        (b"just some text\n", "image/jpeg", 400, "not an image"),
        (jpeg[:len(jpeg) // 3], "image/jpeg", 400, "image"),  # truncated
        (bomb, "image/png", 413, "pixels"),
        (b"\xff" * (2 * 2**20), "image/jpeg", 413, "limit"),  # over --max_body_mb=1
        (jpeg, "text/plain", 415, "Content-Type"),
        (b"", "image/jpeg", 400, "no image"),
        (*multipart({"file": ("a.jpg", jpeg), "extra": ("b", b"1")}), 400, "unknown field"),
        (*multipart({"image": ("a.jpg", jpeg)}), 400, "unknown field"),
    ]
    for data, content_type, status, words in cases:
        answer, _, body = server.request("POST", "/v1/classify", data, content_type)
        assert answer == status and words in body["error"], (content_type, body)
        assert server.post_image(good)[0] == 200  # and the service goes on
    for query in ("top_k=0", "top_k=abc", "threshold=2"):
        answer, _, body = server.post_image(good, f"/v1/classify?{query}")
        assert answer == 422 and "error" in body, body
    assert server.request("GET", "/no/such/path")[0] == 404


def test_the_api_key_guards_all_but_health_and_the_page(served, server):
    good = val_images(served[0])[0]
    for authorize, headers in ((False, {}), (False, {"Authorization": "Bearer wrong"})):
        status, _, body = server.post_image(good, authorize=authorize, headers=headers)
        assert status == 401 and "API key" in body["error"]
        assert server.request("GET", "/metrics", authorize=authorize, headers=headers)[0] == 401
    for public in ("/healthz", "/readyz", "/"):
        assert server.request("GET", public, authorize=False)[0] == 200
    assert server.post_image(good)[0] == 200


def test_an_added_image_is_found_at_once(served, server):
    photos, _, gallery = served
    new = val_images(photos)[-1]  # not in the gallery (the train split)
    status, _, added = server.post_image(new, "/v1/gallery?name=added_one")
    assert status == 201, added
    assert added["gallery"] == 31 and os.path.isfile(added["path"])
    status, _, found = server.post_image(new, "/v1/search?top_k=1")
    assert found["neighbors"][0]["path"] == added["path"]
    assert found["neighbors"][0]["similarity"] > 0.9999
    with np.load(gallery) as f:
        assert added["path"] in f["paths"].tolist()  # written through
    assert server.post_image(new, "/v1/gallery?name=added_one")[0] == 409
    assert server.post_image(new, "/v1/gallery?name=../escape")[0] == 422


def _chromium() -> str:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium on this machine (.ci/run installs Debian's)")


def test_the_page_in_a_browser_shows_classes_and_neighbours(served, server):
    """Chromium, driven by Playwright: the page asks for the key, takes an image, and shows
    the predicted classes as bars and the nearest gallery images as thumbnails."""
    playwright = pytest.importorskip("playwright.sync_api", reason="the dev extra's playwright")
    executable = _chromium()
    query = val_images(served[0])[0]
    status, _, expected = server.post_image(query, "/v1/classify?top_k=5")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable,
                                         args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.wait_for_selector("#key", state="visible")  # /v1/model answered 401
            page.fill("#keyinput", KEY)
            page.click("#keybutton")
            page.wait_for_function("document.getElementById('about').textContent"
                                   ".includes('resnet8')")
            page.set_input_files("#file", query)
            page.wait_for_selector("#classes .bar")
            names = page.locator("#classes .bar span").all_inner_texts()
            assert names == [t["class"] for t in expected["top_k"]]
            page.wait_for_function("[...document.querySelectorAll('#neighbors img')]"
                                   ".filter(i => i.complete && i.naturalWidth > 0).length >= 1",
                                   timeout=30000)
            captions = page.locator("#neighbors figcaption").all_inner_texts()
            assert len(captions) == 8 and all("class_" in c for c in captions)
            assert page.locator("#error").inner_text() == ""
        finally:
            browser.close()


def test_sigterm_mid_burst_answers_every_accepted_request_and_exits_0(served, server):
    """Connections still in the listening socket's queue when it closes are reset by the
    kernel, unread (a client retries them); every request the server took is answered."""
    import re

    paths = val_images(served[0])
    before = server.metric("resnet_jax_requests_received_total")  # this one included

    def classify(path):
        try:
            return server.post_image(path, timeout=60)[0]
        except OSError as error:
            return type(getattr(error, "reason", error)).__name__

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(classify, paths[i % len(paths)]) for i in range(64)]
        while not any(f.done() for f in futures):
            time.sleep(0.005)
        server.process.send_signal(signal.SIGTERM)
        outcomes = [f.result() for f in futures]
    assert server.process.wait(60) == 0, server.log()
    assert set(outcomes) <= {200, "ConnectionRefusedError", "ConnectionResetError"}, outcomes
    received, answered = map(int, re.search(r"stopped: (\d+) requests received, (\d+) "
                                            r"answered", server.log()).groups())
    assert received == answered  # nothing taken was dropped
    assert received - before == outcomes.count(200) >= 1


def test_a_restart_keeps_the_added_image(served, server):
    assert server.process.poll() is not None  # the previous test stopped it
    photos, workdir, gallery = served
    again = Server([f"--workdir={workdir}", f"--gallery={gallery}"])
    try:
        status, _, found = again.post_image(val_images(photos)[-1], "/v1/search?top_k=1")
        assert status == 200 and found["neighbors"][0]["path"].endswith("added_one.jpg")
    finally:
        assert again.stop() == 0


def test_a_gallery_of_another_run_is_refused_in_one_line(served, tmp_path):
    photos, workdir, gallery = served
    with np.load(gallery) as f:
        contents = dict(f)
    contents["source"] = np.str_(json.dumps({"workdir": "/elsewhere", "step": 1}))
    other = str(tmp_path / "other.npz")
    np.savez(other, **contents)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "serve.py"), f"--workdir={workdir}",
                           f"--gallery={other}", "--port=0"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "/elsewhere" in proc.stderr and "embed.py --workdir" in proc.stderr


def test_embed_appends_to_a_gallery_of_its_own_model_only(served, tmp_path):
    import shutil

    photos, workdir, gallery = served
    copy = str(tmp_path / "copy.npz")
    shutil.copy(gallery, copy)
    with np.load(copy) as f:
        before = f["paths"].tolist()
    command = [sys.executable, os.path.join(REPO, "embed.py"), f"--workdir={workdir}",
               f"--output={copy}", "--append", os.path.join(photos, "val")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(copy) as f:
        after = f["paths"].tolist()
    assert after[:len(before)] == before
    assert sorted(after[len(before):]) == sorted(set(val_images(photos)) - set(before))
    with np.load(copy) as f:
        contents = dict(f)
    contents["source"] = np.str_(json.dumps({"workdir": "/elsewhere", "step": 1}))
    np.savez(copy, **contents)
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "embedded by another model" in proc.stderr


@pytest.mark.slow
def test_two_ray_serve_replicas_answer_as_the_single_process_server(served, tmp_path):
    """Ray Serve on a local Ray instance: both replicas answer, with predict.py's numbers."""
    pytest.importorskip("ray", reason="the ray extra")
    import socket
    import urllib.request

    from resnet_jax.runs import inference

    photos, workdir, gallery = served
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=REPO, RAY_DEDUP_LOGS="0")
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "ray.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "resnet_jax.serve.ray_app",
                                f"--workdir={workdir}", f"--gallery={gallery}", "--replicas=2",
                                f"--port={port}"], cwd=REPO, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None and time.monotonic() < deadline, \
                open(tmp_path / "ray.log").read()[-4000:]
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        paths = val_images(photos)
        run = inference.from_workdir(workdir)  # what predict.py computes
        logits = inference.logits_fn(run, run.contract.normalization)(
            np.stack([run.contract.read_image(p) for p in paths]))
        expected = dict(zip(paths, run.contract.predict(logits, 3)))

        def classify(path):
            with open(path, "rb") as f:
                request = urllib.request.Request(url + "/v1/classify?top_k=3", f.read(),
                                                 {"Content-Type": "image/jpeg"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return path, response.headers["X-Served-By"], json.loads(response.read())

        replicas = set()
        for _ in range(20):  # Ray routes each request to one of them: until both answered
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(classify, paths * 2))
            for path, replica, body in answers:
                replicas.add(replica)
                assert [t["class"] for t in body["top_k"]] == \
                    [t["class"] for t in expected[path]["top_k"]]
                np.testing.assert_allclose([t["probability"] for t in body["top_k"]],
                                           [t["probability"] for t in expected[path]["top_k"]],
                                           atol=1e-5)
            if len(replicas) == 2:
                break
        assert len(replicas) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(120)
        log.close()
    assert status == 0, open(tmp_path / "ray.log").read()[-4000:]
