"""The network that embeds: a run's model (or a weights file's) with `num_classes=0`, so it
returns the globally pooled features, from the same parameters without the head.

Where it came from is kept as a `source` (a small JSON-able dict) in every embeddings file, so
that a search embeds its queries with the model that embedded the gallery.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from resnet_jax import models
from resnet_jax import plan as plans
from resnet_jax.errors import UserError
from resnet_jax.models import parts
from resnet_jax.runs import inference, records, warm_start
from resnet_jax.runs.contract import InputContract


@dataclasses.dataclass
class Backbone:
    model: models.ResNet  # num_classes=0: (B, H, W, C) images -> (B, D) pooled features
    variables: dict  # {"params": ..., "batch_stats": ...} without the head, host arrays
    plan: plans.Plan  # the run's (or the weights' config's): kernels and dtype
    contract: InputContract  # its evaluation preprocessing is the embedding's
    source: dict  # how to build it again: {"workdir": ..., "step": ...} or {"config": ...}
    # batch size -> its embedding function (retrieval.embeddings), compiled once per backbone
    embedders: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def description(self) -> str:
        return describe_source(self.source)


def describe_source(source: dict) -> str:
    if "workdir" in source:
        return f"{source['workdir']} at step {source['step']}"
    return f"{source['config']['model']} with the weights {source['init_from']}"


def weights_digest(variables) -> str:
    """A digest of every array of `variables` (names, shapes, dtypes, bytes): two embedding
    files compare alike only if it is equal."""
    import hashlib

    import jax
    import numpy as np

    digest = hashlib.blake2b(digest_size=16)
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(variables)[0],
                             key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def same_weights(source: dict, other: dict) -> bool:
    """Whether two `Backbone.source`s name the same weights: by the weights' digest where both
    record one, else (files of versions without it) by the run and step, or the weights file."""
    if "weights" in source and "weights" in other:
        return source["weights"] == other["weights"]

    def named(s: dict):
        return (s["workdir"], s["step"]) if "workdir" in s else s.get("init_from")

    return named(source) == named(other)


def from_workdir(workdir: str, which: str = "auto") -> Backbone:
    """WORKDIR's model at the checkpoint `which` names (`inference.from_workdir`), as a feature
    extractor."""
    run = inference.from_workdir(workdir, which=which)
    run.contract.require_image_files()
    variables = parts.without_head(run.variables)
    source = {"workdir": os.path.abspath(workdir), "step": run.step,
              "checkpoint": run.checkpoint, "weights": weights_digest(variables)}
    return Backbone(run.model.clone(num_classes=0), variables, run.plan, run.contract, source)


def from_config(config) -> Backbone:
    """The network `config.model` with the weights `config.init_from` names (a torchvision
    state dict, .safetensors or a workdir): every tensor but the head's must fit."""
    if not config.init_from:
        raise UserError("--config embeds with the weights that --config.init_from names; "
                        "set it (or give --workdir W, a run)")
    plan = plans.resolve(config)
    contract = InputContract.of(plan.data, plan.task, ())
    contract.require_image_files()
    model = plan.model.create(num_classes=0, in_channels=3)
    # the head is absent here: every other tensor must fit (merge refuses missing ones)
    variables, summary = warm_start.initialised_from(model, (32, 32, 3), config.init_from,
                                                     config.model)
    print(summary, file=sys.stderr, flush=True)  # stdout may be data (the search's results)
    source = {"config": records.resolved(config),
              "init_from": os.path.abspath(os.path.expanduser(config.init_from)),
              "weights": weights_digest(variables)}
    return Backbone(model, variables, plan, contract, source)


def from_source(source: dict) -> Backbone:
    """The backbone an embeddings file records (`Backbone.source`)."""
    if "workdir" in source:
        if not os.path.isdir(source["workdir"]):
            raise UserError(f"the gallery was embedded by the run {source['workdir']}, which "
                            f"is not there: give --workdir or --config for the queries")
        which = source.get("checkpoint", "latest")  # galleries of older versions: latest
        backbone = from_workdir(source["workdir"],
                                str(source["step"]) if which == "step" else which)
        if backbone.source["step"] != source["step"]:
            print(f"warning: the gallery was embedded at step {source['step']} of "
                  f"{source['workdir']}; its {which} checkpoint, which embeds the queries, is "
                  f"step {backbone.source['step']}: embed the gallery again to compare alike",
                  file=sys.stderr, flush=True)
        return backbone
    config = records.config_from_values(source["config"])
    config.init_from = source["init_from"]
    return from_config(config)


def encode_source(source: dict) -> str:
    return json.dumps(source, sort_keys=True)


def decode_source(text: str) -> dict:
    return json.loads(text)
