"""The public Python API: prune your own ``nn.Module``, fine-tune it in your own loop, save, load.

    import edgeprune

    result = edgeprune.prune_model(model, torch.randn(1, 3, 32, 32), pattern="channel", target_macs=0.5)
    with edgeprune.keep_masks(result):          # zeros stay zeros, whatever the loop does
        my_training_loop(result.model)
    edgeprune.save(result, "runs/my-pruned")
    model = edgeprune.load("runs/my-pruned", MyNet())   # an instance you build, pruned to match

Everything here is a thin layer over :mod:`edgeprune.prune.api` (the engine the CLI uses), so
the same request gives the same model from Python and from ``edgeprune prune``. Errors are
:class:`~edgeprune.errors.EdgepruneError` and name the parameters of these functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.data.task import Task
from edgeprune.errors import EdgepruneError, UsageError
from edgeprune.prune.plan import PrunePlan

# CLI flags that the engine's messages mention, as the parameters of prune_model().
_FLAG_WORDS = {"global": "global_ranking", "regularize": "regularizer", "data": "data", "block-size": "block"}


@dataclass
class PruneResult:
    """What :func:`prune_model` returns.

    Attributes:
        model: the pruned model (a new module; the input model is untouched).
        plan: how it was made from the original: kept channels and masks, replayable.
        summary: the method's report (channels kept per group, MACs before and after, ...).
        input_shape: one sample's shape.
        accuracy: the task's metric on its validation split, where ``data`` had one; else None.
    """

    model: nn.Module
    plan: PrunePlan
    summary: dict[str, Any]
    input_shape: tuple[int, ...]
    accuracy: float | None = None


def _shape(example: torch.Tensor | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    if isinstance(example, torch.Tensor):
        if example.dim() < 2:
            raise UsageError("example_input must have a batch dimension, e.g. torch.randn(1, 3, 224, 224)")
        return tuple(int(d) for d in example.shape[1:])
    if isinstance(example, (tuple, list)) and example and all(isinstance(d, int) and d > 0 for d in example):
        return tuple(example)
    raise UsageError("example_input must be a tensor with a batch dimension or one sample's shape, e.g. (3, 32, 32)")


def _api_words(message: str) -> str:
    """Rewrite ``--target-macs`` as ``target_macs``: a Python caller sets parameters, not flags."""

    def word(match: re.Match[str]) -> str:
        flag = match.group(1)
        return _FLAG_WORDS.get(flag, flag.replace("-", "_"))

    return re.sub(r"--([a-z][a-z0-9/-]*[a-z0-9])", word, message)


def prune_model(
    model: nn.Module,
    example_input: torch.Tensor | tuple[int, ...],
    pattern: str = "channel",
    *,
    data: Task | tuple[torch.Tensor, ...] | None = None,
    **options: Any,
) -> PruneResult:
    """Prune a copy of ``model``.

    Args:
        model: any ``nn.Module`` that torch.fx can trace (your own class is fine).
        example_input: a batch like the ones the model takes, or one sample's shape ``(C, H, W)``.
        pattern: ``channel`` (physically smaller), or a mask pattern: ``unstructured``, ``nm``,
            ``vector``, ``kernel``, ``block``, ``bank``.
        data: a :class:`~edgeprune.data.Task` or ``(x, y[, x_val, y_val])`` tensors, for the
            data-aware methods (taylor criterion, selector, regularizer, gradual schedule) and to
            measure the result's accuracy.
        **options: the fields of :class:`edgeprune.prune.api.PruneRequest` (``sparsity``,
            ``target_macs``, ``target_params``, ``criterion``, ``round_to``, ``n``, ``m``, ...).

    Returns:
        A :class:`PruneResult`.

    Raises:
        EdgepruneError: an unknown option, an impossible request or a model the graph cannot map.
    """
    from edgeprune.data.task import as_task
    from edgeprune.prune.api import PruneRequest
    from edgeprune.prune.api import prune_model as engine
    from edgeprune.train import evaluate

    known = {f.name for f in fields(PruneRequest)} - {"pattern"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown option {', '.join(unknown)}: prune_model() takes {', '.join(sorted(known))}")
    if "ignore" in options:
        options["ignore"] = frozenset(options["ignore"])
    shape = _shape(example_input)
    task = as_task(data) if data is not None else None
    try:
        request = PruneRequest(pattern, **options)
        pruned, plan, summary = engine(model, shape, request, task)
    except EdgepruneError as err:
        raise type(err)(_api_words(str(err))) from err
    accuracy = evaluate(pruned, task) if task is not None and task.has_val else None
    return PruneResult(pruned, plan, summary, shape, accuracy)


def _masks_of(target: PruneResult | PrunePlan | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(target, PruneResult):
        return target.plan.masks
    if isinstance(target, PrunePlan):
        return target.masks
    return dict(target)


@contextmanager
def keep_masks(
    model_or_result: nn.Module | PruneResult, masks: PruneResult | PrunePlan | dict[str, torch.Tensor] | None = None
) -> Iterator[nn.Module]:
    """Keep a masked model's zeros through any training loop run inside the block.

    Each masked weight's gradient is multiplied by its mask (so SGD, momentum, weight decay and
    Adam all leave pruned weights at zero), and the mask is re-applied before every forward and
    once more on leaving the block (so even an optimizer that adds something the gradient did
    not, or a manual edit, cannot leave a pruned weight non-zero). Channel-pruned models have no
    masks; the block then does nothing.

    Args:
        model_or_result: the model being trained, or a :class:`PruneResult` (its model and masks).
        masks: where the masks come from when a bare model is given: a result, a plan or a dict.

    Yields:
        The model.
    """
    from edgeprune.train import apply_masks

    if isinstance(model_or_result, PruneResult):
        model, found = model_or_result.model, model_or_result.plan.masks
    else:
        model = model_or_result
        if masks is None:
            raise UsageError("keep_masks(model, masks): give the masks (a PruneResult, a plan or a dict)")
        found = _masks_of(masks)
    modules = dict(model.named_modules())
    missing = sorted(set(found) - set(modules))
    if missing:
        raise UsageError(f"keep_masks: the model has no module {', '.join(missing)} that the masks name")
    handles: list[Any] = []
    for path, mask in found.items():
        weight = modules[path].weight
        assert isinstance(weight, torch.Tensor)
        keep = mask.to(weight.dtype)
        handles.append(weight.register_hook(lambda grad, keep=keep: grad * keep))
    if found:
        handles.append(model.register_forward_pre_hook(lambda module, args: apply_masks(model, found)))
    apply_masks(model, found)
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        apply_masks(model, found)


def save(result: PruneResult, folder: str | Path, source: str | None = None, **meta: Any) -> Path:
    """Write ``result`` as a pruned-model folder (``model.json``, ``plan.json``, weights).

    Args:
        result: what :func:`prune_model` returned, after any fine-tuning of ``result.model``.
        folder: created or replaced atomically.
        source: the model spec the CLI can rebuild it from (``package.module:factory``); without
            one, :func:`load` with an instance of your class loads it back.
        **meta: more fields for ``model.json`` (``accuracy``, ``data``, ...).
    """
    from edgeprune.prune.plan import save_pruned

    record = {
        "source": source or f"python:{type(result.model).__module__}.{type(result.model).__qualname__}",
        "input_shape": list(result.input_shape),
        "method": result.plan.pattern,
        "accuracy": result.accuracy,
        "summary": result.summary,
        **meta,
    }
    return save_pruned(Path(folder), result.model, result.plan, record)


def load(folder: str | Path, model: nn.Module) -> nn.Module:
    """Prune ``model`` (a fresh instance of the original class) as the folder's plan says, and load its weights.

    Raises:
        UsageError: not a pruned-model folder, or weights that do not fit the model.
    """
    from edgeprune.models.spec import load_weights
    from edgeprune.prune.plan import is_pruned_folder, read_plan

    path = Path(folder)
    if not is_pruned_folder(path):
        raise UsageError(f"{path} is not a pruned-model folder (no model.json and plan.json)")
    read_plan(path).apply(model)
    load_weights(model, path / "weights.safetensors")
    return model.eval()
