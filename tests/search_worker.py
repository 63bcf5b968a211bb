"""A search worker whose training is a stand-in: the study's bookkeeping across processes
(who runs which trial, adoption after kill -9, the total), without compiling a model.

    python tests/search_worker.py WORKDIR STORAGE TOTAL SECONDS_PER_STEP STUDY \
        [PROCESS_ID NUM_PROCESSES COORDINATOR_ADDRESS]

The stand-in "trains" 6 steps, evaluates at steps 2, 4 and 6 (top-1 rises with the learning
rate, so the pruner has something to compare), writes its metrics as the loop does, and keeps
its own checkpoint (the last step done) so an adopted trial resumes. Each start appends a line
`start STEP PID` to the trial's `starts` file: a trial run twice from step 0 would show it.
With the last three arguments the worker is a group of processes (jax.distributed on 127.0.0.1):
process 0 "trains" as above; the others write, per step, `STEP learning_rate` to the trial's
`follower_P` file, so a test can see that they trained the same trial, with the same values,
and stopped where process 0 did.
"""

from __future__ import annotations

import json
import os
import sys
import time

STEPS, EVAL_EVERY = 6, 2


def stand_in_train(seconds_per_step: float):
    def train(config, directory, *, on_evaluation):
        import jax

        if jax.process_index() != 0:
            return follow(config, directory, on_evaluation)
        progress = os.path.join(directory, "done_steps")
        start = int(open(progress).read()) if os.path.exists(progress) else 0
        with open(os.path.join(directory, "starts"), "a") as f:
            f.write(f"start {start} {os.getpid()}\n")
        for step in range(start + 1, STEPS + 1):
            time.sleep(seconds_per_step)
            rows = [{"step": step, "split": "train", "loss": 1.0, "top1": 0.5}]
            values = None
            if step % EVAL_EVERY == 0:
                values = {"top1": min(1.0, config.learning_rate * step), "loss": 1.0 / step}
                rows.append({"step": step, "split": "eval", **values})
            with open(os.path.join(directory, "metrics.jsonl"), "a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            with open(progress, "w") as f:
                f.write(str(step))
            if values is not None and on_evaluation(step, values):
                return {"step": step, "pruned": True}
        return {"step": STEPS}

    def follow(config, directory, on_evaluation):
        import jax

        os.makedirs(directory, exist_ok=True)
        for step in range(1, STEPS + 1):
            time.sleep(seconds_per_step)
            with open(os.path.join(directory, f"follower_{jax.process_index()}"), "a") as f:
                f.write(f"{step} {config.learning_rate}\n")
            if step % EVAL_EVERY == 0 and on_evaluation(step, {"top1": 0.0, "loss": 1.0}):
                return {"step": step, "pruned": True}
        return {"step": STEPS}

    return train


def main(workdir: str, storage: str, total: int, seconds_per_step: float, name: str,
         process_id: str = "", num_processes: str = "", address: str = "") -> None:
    if num_processes:
        from resnet_jax.launch import multiprocess

        multiprocess.initialize(address, int(num_processes), int(process_id))
    from resnet_jax.configs import digits
    from resnet_jax.experiments import search, space, trials

    config = digits.get_config()
    config.eval_every_steps = EVAL_EVERY
    searched = space.parse_space(["learning_rate=loguniform:0.01:0.5"], config)
    study = trials.open_study(workdir, storage, name, "maximize",
                              search.create_sampler("random", searched, total, None),
                              search.create_pruner("asha", config))
    worker = trials.Search(study, workdir, total, searched, config,
                           train=stand_in_train(seconds_per_step))
    trials.work(worker, say=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:])
