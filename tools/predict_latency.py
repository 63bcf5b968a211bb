"""Wall time of `predict.py` on one image, as a user runs it: the first call (compiling, into
the run's own compilation cache) and the calls after it (a warm cache), median of repeats.

    python tools/predict_latency.py [--model resnet50] [--image_size 224] [--repeats 5] \\
        [--output benchmarks/DIR/predict_latency.json]

Writes a photo folder and trains the model one step on it (a run of configs/folder.py with its
own compilation cache), then times `predict.py --workdir RUN IMAGE` in fresh processes. Also
says whether TensorFlow was imported (it should not be: evaluation's preprocessing is Pillow's).
"""

import argparse
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


def _run(args, env=None):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        photos = write_photo_crops(os.path.join(root, "photos"), classes=3, train=4, val=2)
        workdir = os.path.join(root, "run")
        _run(["train.py", "--config", "configs/folder.py", "--workdir", workdir,
              f"--config.data_dir={photos}", f"--config.model={args.model}",
              f"--config.image_size={args.image_size}",
              f"--config.eval_resize={round(args.image_size / 0.875)}",
              "--config.batch_size=4", "--config.eval_batch_size=2",
              "--config.num_train_steps=1", "--config.progress_bar=false",
              f"--config.compilation_cache_dir={os.path.join(root, 'xla_cache')}"])
        image = os.path.join(photos, "val", "class_0", "000.jpg")
        command = ["-X", "importtime", "predict.py", "--workdir", workdir, "--json", image]
        cold, proc = _run(command)
        tensorflow = any(line.rstrip().endswith("| tensorflow") for line in
                         proc.stderr.splitlines())
        warm = [_run(command)[0] for _ in range(args.repeats)]
    result = {"model": args.model, "image_size": args.image_size, "cold_s": round(cold, 2),
              "warm_median_s": round(statistics.median(warm), 2),
              "warm_s": [round(t, 2) for t in warm], "imports_tensorflow": tensorflow,
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=2))
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
