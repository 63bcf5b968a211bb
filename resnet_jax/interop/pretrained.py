"""Pretrained weights by name, fetched from the Hugging Face Hub through `huggingface_hub` (its
cache, `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_TOKEN` and progress bars are the user's own):

    torchvision:resnet50        torchvision's default ImageNet weights for resnet50 (IMAGENET1K_V2
                                where torchvision has a V2, else IMAGENET1K_V1)
    torchvision:resnet50.v1     IMAGENET1K_V1 (also .v2)
    hf-hub:OWNER/REPO[@REV]     any Hub repo holding a ResNet state dict as model.safetensors,
                                e.g. hf-hub:timm/resnet50.a1_in1k

The `torchvision:` names resolve to timm's safetensors copies of exactly torchvision's weights
(`timm/resnet50.tv2_in1k` is IMAGENET1K_V2, `.tv_in1k` IMAGENET1K_V1): no name needs PyTorch or
unpickling. timm's ResNets name their tensors as torchvision does, so the file loads as a
torchvision state dict (`warm_start`, for `init_from`). In a program:

    from resnet_jax.interop import pretrained
    name, variables = pretrained.load("torchvision:resnet50")    # ("resnet50", Flax variables)
    model = create_model(name, num_classes=1000)                 # model.apply(variables, ...)
"""

from __future__ import annotations

import dataclasses
import os

from resnet_jax.errors import UserError

TORCHVISION_PREFIX, HUB_PREFIX = "torchvision:", "hf-hub:"
WEIGHTS_FILE = "model.safetensors"
# torchvision model -> {version: timm's tag}; the first version is torchvision's DEFAULT.
TORCHVISION_WEIGHTS = {
    "resnet18": {"v1": "tv_in1k"},
    "resnet34": {"v1": "tv_in1k"},
    **{name: {"v2": "tv2_in1k", "v1": "tv_in1k"}
       for name in ("resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                    "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")},
}


class WeightsNameError(UserError):
    """A weights name that is unknown, or weights the Hub cannot give."""


@dataclasses.dataclass(frozen=True)
class HubWeights:
    name: str  # as the user wrote it
    repo: str
    revision: str | None  # None: the repo's main branch
    filename: str = WEIGHTS_FILE


def is_name(init_from: str) -> bool:
    """Whether `init_from` names weights (rather than a file or a workdir)."""
    return init_from.startswith((TORCHVISION_PREFIX, HUB_PREFIX))


def known_names() -> list[str]:
    names = []
    for model, versions in TORCHVISION_WEIGHTS.items():
        names += [f"{TORCHVISION_PREFIX}{model}"] + [f"{TORCHVISION_PREFIX}{model}.{v}"
                                                     for v in versions]
    return names


def resolve(name: str) -> HubWeights:
    """The Hub repo (and revision) a weights name stands for; WeightsNameError if unknown."""
    if name.startswith(HUB_PREFIX):
        repo, _, revision = name[len(HUB_PREFIX):].partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise WeightsNameError(f"init_from={name}: expected hf-hub:OWNER/REPO[@REVISION], "
                                   f"e.g. hf-hub:timm/resnet50.a1_in1k")
        return HubWeights(name, repo, revision or None)
    model, _, version = name[len(TORCHVISION_PREFIX):].partition(".")
    versions = TORCHVISION_WEIGHTS.get(model)
    if versions is None or (version and version not in versions):
        raise WeightsNameError(f"unknown weights {name!r}; known: {', '.join(known_names())}, "
                               f"or hf-hub:OWNER/REPO for a Hub repo with a ResNet's "
                               f"{WEIGHTS_FILE}")
    tag = versions[version] if version else next(iter(versions.values()))
    return HubWeights(name, f"timm/{model}.{tag}", None)


def fetch(name: str) -> tuple[str, dict]:
    """The local path of the weights `name` names (downloaded into huggingface_hub's cache
    unless there already), and their record: {"init_from", "repo", "revision" (the commit),
    "file"}. WeightsNameError in one line for an unknown name, a repo or file the Hub does not
    have, or no network and nothing cached."""
    weights = resolve(name)
    try:
        import huggingface_hub
        from huggingface_hub import constants
        from huggingface_hub import errors as hub_errors
    except ImportError:
        raise WeightsNameError(f"init_from={name} downloads weights with huggingface_hub: "
                               f"pip install huggingface_hub (the train extra has it)") from None
    try:
        path = huggingface_hub.hf_hub_download(weights.repo, weights.filename,
                                               revision=weights.revision)
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as error:
        # no network (or offline mode) and not in the cache
        raise WeightsNameError(
            f"init_from={name}: cannot download {weights.repo}/{weights.filename} from "
            f"{constants.ENDPOINT} and it is not in the cache ({constants.HF_HUB_CACHE}): "
            f"{_first_line(error)}. On a machine "
            f"with network access run `hf download {weights.repo} {weights.filename}` and copy "
            f"that cache here, or give the downloaded file as init_from") from None
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError,
            hub_errors.EntryNotFoundError) as error:
        where = weights.repo + (f"@{weights.revision}" if weights.revision else "")
        raise WeightsNameError(f"init_from={name}: the Hub has no {weights.filename} in "
                               f"{where} ({_first_line(error)})") from None
    except hub_errors.HfHubHTTPError as error:
        raise WeightsNameError(f"init_from={name}: the Hub refused {weights.repo}/"
                               f"{weights.filename} ({_first_line(error)})") from None
    # the cache keeps each file under snapshots/<commit>/: the revision actually loaded
    commit = os.path.basename(os.path.dirname(path))
    return path, {"init_from": name, "repo": weights.repo, "revision": commit,
                  "file": weights.filename}


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def load(name: str, model: str | None = None) -> tuple[str, dict]:
    """(model name, Flax variables {"params", "batch_stats"}) of the weights `name` names, every
    tensor loaded (the head included: ImageNet's 1000 classes for torchvision's). `model`: the
    architecture of an hf-hub: repo (default: its name up to the first '.', as timm names
    them, e.g. resnet50 for timm/resnet50.a1_in1k)."""
    from safetensors.numpy import load_file

    from resnet_jax.interop import torchvision_weights
    from resnet_jax.models import MODELS

    weights = resolve(name)
    model = model or weights.repo.split("/")[-1].split(".")[0]
    if model not in MODELS:
        raise WeightsNameError(f"{name}: which architecture? {model!r} is not one of this "
                               f"package's models; pass model= (e.g. model='resnet50')")
    path, _ = fetch(name)
    return model, torchvision_weights.from_torchvision(model, load_file(path))
