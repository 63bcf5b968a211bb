"""Load on the service, from 1, 4 and 16 concurrent clients: throughput, p50 and p99 latency
for classify and search, and the ratio of each to one client sending one image at a time.
Stays on 127.0.0.1 and stops by itself (a bounded count of requests and a time limit per step).

    python tools/serve_load.py [--model resnet18] [--image_size 160] [--clients 1,4,16] \\
        [--requests 480] [--rounds 3] [--output benchmarks/DIR/serve_load.json]
    python tools/serve_load.py --workdir W --gallery G.npz IMAGES_DIR ...   # your own run

Without --workdir it writes a photo folder, trains the model a few steps on it (speed does
not depend on the weights), embeds the train split as the gallery and serves that. Each client
keeps one HTTP connection and sends the val images in turn, as raw JPEG bodies. The client
counts take turns (1, 4, 16, 1, 4, 16, ...) for --rounds rounds: each row gives the median
round, and its ratio to one client is the median of the ratios within a round.
"""

import argparse
import concurrent.futures
import glob
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.image_folders import write_photo_crops  # noqa: E402
from tools.served import Server, train_folder_run  # noqa: E402


def _client(port: int, endpoint: str, images: list[bytes], count: int, deadline: float):
    """Sends up to `count` requests before `deadline`: (latencies in s, failures)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, failures = [], 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        connection.request("POST", endpoint, images[i % len(images)],
                           {"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
    connection.close()
    return latencies, failures


def measure(port: int, endpoint: str, images: list[bytes], clients: int, requests: int,
            max_seconds: float) -> tuple[dict, list[float]]:
    """`clients` concurrent clients send `requests` in all: (the row, the latencies in s)."""
    deadline = time.monotonic() + max_seconds
    per_client = -(-requests // clients)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda k: _client(port, endpoint, images[k:] + images[:k],
                                                  per_client, deadline), range(clients)))
    wall = time.perf_counter() - started
    latencies = sorted(t for result, _ in results for t in result)
    return {"endpoint": endpoint, "clients": clients, "answered": len(latencies),
            "failed": sum(f for _, f in results), "seconds": round(wall, 3),
            "images_per_s": round(len(latencies) / wall, 2)}, latencies


def summary(rounds: list[tuple[dict, list[float]]], alone: list[dict]) -> dict:
    """One (endpoint, clients) row from its rounds: the median images/s, p50 and p99 of every
    request's latency, and `vs_one_client`, the median over rounds of the ratio to the one-
    client step of the same round (neighbouring steps share the machine's state, which on a
    shared VM drifts by more than the effect measured)."""
    latencies = sorted(t for _, round_latencies in rounds for t in round_latencies)
    rates = [row["images_per_s"] for row, _ in rounds]
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    first = rounds[0][0]
    return {"endpoint": first["endpoint"], "clients": first["clients"],
            "answered": sum(row["answered"] for row, _ in rounds),
            "failed": sum(row["failed"] for row, _ in rounds),
            "images_per_s": statistics.median(rates), "rounds_images_per_s": rates,
            "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p99_ms": round(1000 * p99, 1) if p99 is not None else None,
            "vs_one_client": round(statistics.median(
                rate / one["images_per_s"] for rate, one in zip(rates, alone)), 2)}


def device_alone(workdir: str, sizes=(1, 8, 16)) -> dict:
    """The served forward pass alone, no HTTP and no decoding, in this process (before the
    server starts): images/s per batch size, the median of several calls after two warm ones.
    The service's ceiling: at one client it cannot beat batch 1's figure, at 16 the best of
    the others."""
    import numpy as np

    from resnet_jax.serve.service import Service

    service = Service.load(workdir, max_batch_size=max(sizes), batch_shapes=sizes)
    service.engine.compile()
    rates = {}
    for size in sizes:
        pixels = np.zeros((size, *service.engine.run.image_shape), np.uint8)
        seconds = []
        for call in range(2 + max(5, 48 // size)):
            started = time.perf_counter()
            service.engine.forward(pixels)
            if call >= 2:
                seconds.append(time.perf_counter() - started)
        rates[str(size)] = round(size / statistics.median(seconds), 2)
    return rates


def _prepared(args, root: str) -> tuple[str, str, list[str]]:
    """(workdir, gallery, image files): the user's, or a photo folder's run made here."""
    if args.workdir:
        files = sorted(p for d in args.images for p in glob.glob(os.path.join(d, "**", "*.jp*g"),
                                                                 recursive=True))
        return args.workdir, args.gallery, files
    photos = write_photo_crops(os.path.join(root, "photos"), classes=4, train=30, val=16)
    workdir = os.path.join(root, "run")
    train_folder_run(photos, workdir, os.path.join(root, "cache"), model=args.model,
                     image_size=args.image_size, eval_resize=int(args.image_size * 8 / 7),
                     steps=2, in_process=False)
    gallery = os.path.join(root, "gallery.npz")
    subprocess.run([sys.executable, os.path.join(REPO, "embed.py"), f"--workdir={workdir}",
                    f"--output={gallery}", os.path.join(photos, "train")], check=True,
                   cwd=REPO, capture_output=True)
    return workdir, gallery, sorted(glob.glob(os.path.join(photos, "val", "*", "*.jpg")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help="with --workdir: folders of JPEG images")
    parser.add_argument("--workdir")
    parser.add_argument("--gallery")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image_size", type=int, default=160)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--endpoints", default="classify,search")
    parser.add_argument("--requests", type=int, default=480,
                        help="per endpoint and client count, over all rounds")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each client count measured this many times, interleaved")
    parser.add_argument("--max_seconds", type=float, default=60, help="per round and step")
    parser.add_argument("--output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        workdir, gallery, files = _prepared(args, root)
        images = [open(p, "rb").read() for p in files]
        device = device_alone(workdir)
        print(json.dumps({"device_alone_images_per_s": device}), flush=True)
        server = Server([f"--workdir={workdir}", f"--gallery={gallery}"])
        rows = []
        clients_list = [int(c) for c in args.clients.split(",")]
        try:
            for endpoint in args.endpoints.split(","):
                path = f"/v1/{endpoint}"
                for clients in clients_list:  # warm: connections, threads, caches
                    measure(server.port, path, images, clients, 2 * clients, 30)
                steps = {clients: [] for clients in clients_list}
                for _ in range(args.rounds):  # interleaved: 1, 4, 16, 1, 4, 16, ...
                    for clients in clients_list:
                        steps[clients].append(measure(
                            server.port, path, images, clients,
                            -(-args.requests // args.rounds), args.max_seconds))
                one = [row for row, _ in steps[clients_list[0]]]
                for clients in clients_list:
                    rows.append(summary(steps[clients], one))
                    print(json.dumps(rows[-1]), flush=True)
            compilations = server.metric("resnet_jax_compilations_after_ready")
        finally:
            server.stop()
    from resnet_jax import environment

    result = {"date": time.strftime("%Y-%m-%d"), "machine": environment.cpu_name(),
              "model": args.model,
              "image_size": args.image_size, "workdir": args.workdir or "made here",
              "cpu_count": os.cpu_count(), "compilations_after_ready": compilations,
              "device_alone_images_per_s": device, "rounds": args.rounds,
              "rows": rows}
    print(json.dumps(result, indent=2))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
