"""A ResNet's parts by name, asked of the model rather than spelled by its users (timm's
`get_classifier`, `group_matcher` and `feature_info` are the pattern).

The top-level modules of `ResNet`'s parameters, in network order:
    stem     conv1, bn1
    stages   layer1_0, layer1_1, ... layerK_J (block J of stage K; 4 stages, 3 for CIFAR nets)
    head     head_hidden (head="mlp" only), fc (the classifier)

Freezing (`trainable`), layer-wise learning-rate decay, warm starts, the exports and the
embeddings ask this module which module is which; only `resnet.py` (which builds them) and the
torchvision key mapping spell the names.
"""

from __future__ import annotations

from collections.abc import Mapping

STEM_MODULES = ("conv1", "bn1")
CLASSIFIER = "fc"  # the last Dense: (features or hidden width) -> classes
HIDDEN = "head_hidden"  # head="mlp": Dense(head_hidden) + ReLU before the classifier
HEAD_MODULES = (HIDDEN, CLASSIFIER)  # input side first
STAGE_PREFIX = "layer"


def stage_name(index: int) -> str:
    """The stage `index` (0-based) as the model names it: "layer1".."""
    return f"{STAGE_PREFIX}{index + 1}"


def block_name(stage: int, block: int) -> str:
    """Block `block` of stage `stage` (both 0-based): "layer1_0".."""
    return f"{stage_name(stage)}_{block}"


def part_of(module: str) -> str:
    """"stem", "layerK" or "head" for a top-level module name; "" for anything else."""
    if module in STEM_MODULES:
        return "stem"
    if module in HEAD_MODULES:
        return "head"
    return module.split("_")[0] if module.startswith(STAGE_PREFIX) else ""


def is_head(module: str) -> bool:
    return module in HEAD_MODULES


def is_norm(module: str) -> bool:
    """A batch-norm module (bn1, bn2.., a projection's bn), at any depth."""
    return module.startswith("bn")


def blocks_in_order(params: Mapping) -> list[str]:
    """The residual blocks among `params`' top-level modules, in network order (timm's
    `group_matcher(coarse=False)` groups: one group a block)."""
    blocks = [name for name in params if part_of(name).startswith(STAGE_PREFIX)]
    return sorted(blocks, key=lambda name: tuple(int(n) for n in
                                                 name[len(STAGE_PREFIX):].split("_")))


def classifier(params: Mapping) -> Mapping:
    """The classifier's parameters (timm's `get_classifier`): {"kernel", "bias"}."""
    return params[CLASSIFIER]


def num_classes(params: Mapping) -> int:
    """The classes the parameters predict: the classifier's output width."""
    return classifier(params)["kernel"].shape[-1]


def in_channels(params: Mapping) -> int:
    """The image channels the stem's convolution takes."""
    return params[STEM_MODULES[0]]["kernel"].shape[2]


def hidden_layer(params: Mapping) -> Mapping | None:
    """The MLP head's hidden Dense ({"kernel", "bias"}), or None for a linear head."""
    return params.get(HIDDEN)


def without_head(variables: Mapping) -> dict:
    """`variables` ({"params", "batch_stats"}) less the head: what a model with
    `num_classes=0` (the pooled features) takes."""
    return {collection: {name: value for name, value in tree.items() if not is_head(name)}
            for collection, tree in variables.items()}
