"""Resolve the CLI's MODEL argument into a module, its input shape and where it came from.

Accepted forms:

* a built-in name: ``digits-resnet``;
* ``torchvision:NAME``: a torchvision classification model with random weights (weights never
  come from a hub at run time; pass ``--weights``);
* ``package.module:factory``: any importable callable returning an ``nn.Module``;
* the folder of a pruned model (``model.json`` + ``plan.json`` + ``weights.safetensors``).

Weights files are ``.safetensors`` or a ``.pt`` state dict read with ``weights_only=True``, so a
weights file can never run code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.models import digits

BUILTINS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "digits-resnet": (digits.digits_resnet, digits.INPUT_SHAPE),
}
# torchvision models whose default input is not 224x224.
TORCHVISION_SIZES = {"inception_v3": 299}


@dataclass
class LoadedModel:
    """A resolved model and what is known about it."""

    model: nn.Module
    input_shape: tuple[int, ...]
    spec: str
    meta: dict[str, Any] = field(default_factory=dict)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors file or a plain state dict into ``model`` (strict).

    Raises:
        UsageError: the file is missing, unreadable, or does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise assorted types for corrupt files
        raise UsageError(f"cannot read weights file {path}: {err}") from err
    if not isinstance(state, dict):
        raise UsageError(f"weights file {path} does not hold a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"weights file {path} does not fit the model: {first}") from err


def build_source(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the (unpruned, randomly initialized) model named by ``spec``.

    Raises:
        UsageError: unknown name, or a factory that cannot be imported.
    """
    if spec in BUILTINS:
        factory, shape = BUILTINS[spec]
        return factory(), shape
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise UsageError(f"torchvision has no classification model '{name}'")
        size = TORCHVISION_SIZES.get(name, 224)
        kwargs: dict[str, Any] = {"weights": None}
        if name in ("inception_v3", "googlenet"):
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = True
        return torchvision.models.get_model(name, **kwargs), (3, size, size)
    if ":" in spec and not Path(spec).exists():
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise UsageError(f"cannot import '{spec}': {err}") from err
        model = factory()
        if not isinstance(model, nn.Module):
            raise UsageError(f"'{spec}' did not return an nn.Module")
        declared = getattr(model, "input_shape", None)
        if declared is None:
            raise UsageError(f"'{spec}': set an `input_shape` attribute (C, H, W) on the model it returns")
        return model, tuple(int(d) for d in declared)
    raise UsageError(
        f"unknown model '{spec}': use a built-in ({', '.join(BUILTINS)}), torchvision:NAME, "
        "package.module:factory, or a pruned-model folder"
    )


def load_model(spec: str, weights: Path | None = None) -> LoadedModel:
    """Resolve ``spec`` (see module docstring) and load weights if given.

    Raises:
        UsageError: with a one-line reason the CLI prints as is.
    """
    from edgeprune.prune.plan import is_pruned_folder, read_meta, read_plan

    path = Path(spec)
    if path.is_dir():
        if not is_pruned_folder(path):
            raise UsageError(f"{path} is a folder but not a pruned model (no model.json/plan.json)")
        meta = read_meta(path)
        model, _ = build_source(meta["source"])
        plan = read_plan(path)
        plan.apply(model)
        load_weights(model, weights or path / "weights.safetensors")
        model.eval()
        return LoadedModel(model, tuple(meta["input_shape"]), str(path), meta)
    model, shape = build_source(spec)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    return LoadedModel(model, shape, spec, {"source": spec, "input_shape": list(shape)})
