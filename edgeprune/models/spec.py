"""Resolve the CLI's MODEL argument into a module, its input shape and where it came from.

Accepted forms:

* a built-in name: ``digits-resnet``;
* ``torchvision:NAME``: a torchvision classification model with random weights (weights never
  come from a hub at run time; pass ``--weights``);
* ``package.module:factory``: any importable callable returning an ``nn.Module``; its input shape
  comes from ``input_shape=(C, H, W)`` given on the command line (``--input-shape C,H,W``) or an
  ``input_shape`` attribute on the model;
* the folder of a pruned model (``model.json`` + ``plan.json`` + ``weights.safetensors``).

Weights files are ``.safetensors`` or a ``.pt`` state dict read with ``weights_only=True``, so a
weights file can never run code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.data.sources import import_factory
from edgeprune.errors import UsageError
from edgeprune.models import digits, fashion

BUILTINS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "digits-resnet": (digits.digits_resnet, digits.INPUT_SHAPE),
    "fashion-resnet": (fashion.fashion_resnet, fashion.INPUT_SHAPE),
}
DEFAULT_DATA = {"digits-resnet": "digits", "fashion-resnet": "fashion-mnist"}
"""The data a built-in model is trained on, used where ``--data`` is not given."""
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


def parse_shape(text: str) -> tuple[int, ...]:
    """``C,H,W`` (or any comma-separated positive sizes) as a tuple.

    Raises:
        UsageError: not a list of positive integers.
    """
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"--input-shape takes positive sizes like 3,224,224, got '{text}'")
    return shape


def build_source(spec: str, input_shape: tuple[int, ...] | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the (unpruned, randomly initialized) model named by ``spec``.

    Args:
        spec: a built-in name, ``torchvision:NAME`` or ``package.module:factory``.
        input_shape: one sample's shape, overriding what the model declares (factories).

    Raises:
        UsageError: unknown name, or a factory that cannot be imported.
    """
    if spec in BUILTINS:
        factory, shape = BUILTINS[spec]
        return factory(), input_shape or shape
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
        return torchvision.models.get_model(name, **kwargs), input_shape or (3, size, size)
    if ":" in spec and not Path(spec).exists():
        model = import_factory(spec, "model factory")()
        if not isinstance(model, nn.Module):
            raise UsageError(f"'{spec}' did not return an nn.Module")
        declared = input_shape or getattr(model, "input_shape", None)
        if declared is None:
            raise UsageError(
                f"'{spec}': give --input-shape C,H,W (or set an `input_shape` attribute on the model it returns)"
            )
        return model, tuple(int(d) for d in declared)
    raise UsageError(
        f"unknown model '{spec}': use a built-in ({', '.join(BUILTINS)}), torchvision:NAME, "
        "package.module:factory, or a pruned-model folder"
    )


def load_model(spec: str, weights: Path | None = None, input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """Resolve ``spec`` (see module docstring) and load weights if given.

    A pruned folder records its input shape, so ``input_shape`` applies to the other forms only.

    Raises:
        UsageError: with a one-line reason the CLI prints as is.
    """
    from edgeprune.prune.plan import is_pruned_folder, read_meta, read_plan

    path = Path(spec)
    if path.is_dir():
        if not is_pruned_folder(path):
            raise UsageError(f"{path} is a folder but not a pruned model (no model.json/plan.json)")
        meta = read_meta(path)
        model, _ = build_source(meta["source"], tuple(meta["input_shape"]))
        plan = read_plan(path)
        plan.apply(model)
        load_weights(model, weights or path / "weights.safetensors")
        model.eval()
        return LoadedModel(model, tuple(meta["input_shape"]), str(path), meta)
    model, shape = build_source(spec, input_shape)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    return LoadedModel(model, shape, spec, {"source": spec, "input_shape": list(shape)})


def module_and_shape(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A spec or pruned folder as (module, input shape): the loader the PyTorch runner is given."""
    loaded = load_model(spec)
    return loaded.model, loaded.input_shape


def default_data(loaded: LoadedModel) -> str | None:
    """The data spec to use when none is given: what a pruned folder was made with, else a built-in's own."""
    recorded = loaded.meta.get("data")
    if isinstance(recorded, str):
        return recorded
    return DEFAULT_DATA.get(str(loaded.meta.get("source", loaded.spec)))
