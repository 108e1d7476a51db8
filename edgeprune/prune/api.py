"""One entry point for every pattern and method, used by the CLI and the demo: ``prune_model``.

Patterns (what the zeros look like, which decides what hardware can exploit them):

* ``channel`` removes channels physically (a smaller dense model), through the structural engine;
* ``unstructured``, ``vector``, ``kernel``, ``block``, ``bank`` and ``nm`` keep the shape and zero
  weights through masks, which the plan records so fine-tuning and replay keep the zeros where
  they are (see :mod:`edgeprune.prune.patterns`).

Methods (how the zeros are chosen), combinable with a pattern where it makes sense:

* magnitude, one-shot (the default) or gradual with Zhu and Gupta's cubic schedule and the
  bank-balanced paper's withdraw rule (``schedule="gradual"``, mask patterns);
* channel permutation before 2:4 masking (``permute=True``, Pool and Yu);
* data-aware channel selection with least-squares refit (``selector=...``, He et al.);
* training-time regularization followed by removing what it zeroed (``regularizer=...``: L1, L2,
  L1/2, SSL group lasso, BN-scale L1).

Methods that look at data take a :class:`~edgeprune.data.Task` (``--data`` on the command line):
its training batches, its held-out split for the withdraw rule, its loss and metric.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.data.task import Task, as_task
from edgeprune.errors import UsageError
from edgeprune.prune.patterns import make_masks, validate_nm
from edgeprune.prune.plan import PrunePlan
from edgeprune.prune.structural import ChannelConfig, prune_channels
from edgeprune.train import TrainConfig, apply_masks, evaluate
from edgeprune.train import finetune as recover
from edgeprune.vocab import DATA_CRITERIA, MASK_PATTERNS, PATTERNS, REGULARIZERS, SCHEDULES, SELECTORS

# Lambda per penalty when none is given: what gives clear sparsity at a small accuracy cost on
# digits-resnet in 4 epochs at lr 0.01 (benchmarks/group_lasso.py); other models need their own.
DEFAULT_STRENGTH = {"l1": 0.05, "l1/2": 0.05, "l2": 0.01, "group-lasso": 6.0, "bn-l1": 30.0}
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PruneRequest:
    """A pruning request as the CLI takes it.

    Attributes:
        pattern: a name in :data:`PATTERNS`.
        sparsity: fraction removed, in (0, 1): channels per group, or weights per layer.
        target_macs: for channel pruning, the fraction of MACs to keep instead of ``sparsity``.
        criterion: channel importance criterion (channel pattern only).
        n, m: the N:M pattern (nm only).
        ignore: module paths left alone (default for masks: the stem conv and the classifier).
        round_to: channel counts rounded to multiples of this (channel pattern only).
        block: tile side of the block pattern, in weights of the GEMM view.
        banks, bank_size: bank pattern: banks per GEMM row or weights per bank (default 4 banks).
        permute: nm only: permute channels first so the mask keeps more magnitude.
        selector: channel pattern: choose channels from data (lasso, omp, l1/2 or magnitude) and
            refit the next layer by least squares.
        refit: with a selector, refit by least squares (False: keep the weights).
        calib_samples: with a selector, training images used as calibration data.
        regularizer: train with this penalty first (see :mod:`edgeprune.prune.regularize`).
        reg_strength: its lambda (default: :data:`DEFAULT_STRENGTH` for the penalty).
        reg_groups: group-lasso groupings (filter, channel, shape, depth).
        reg_epochs: regularized training epochs.
        reg_lr: their peak learning rate (SSL's advice: a tenth of the original training's).
        schedule: oneshot or gradual (mask patterns other than nm).
        steps: pruning steps of the gradual schedule.
        step_epochs: fine-tuning epochs after each gradual step.
        tolerance: gradual only: the withdraw rule's allowed accuracy drop (e.g. 0.01); None: off.
        target_params: for channel pruning, the fraction of parameters to keep instead.
        global_ranking: channel only: rank channels across all groups instead of cutting each alike.
        max_sparsity: channel only: never remove more than this fraction of one group.
        layer_sparsity: channel only: module path -> fraction removed from what it produces,
            overriding the uniform or global amount there.
    """

    pattern: str
    sparsity: float | None = None
    target_macs: float | None = None
    criterion: str = "l1"
    n: int = 2
    m: int = 4
    ignore: frozenset[str] = field(default_factory=frozenset)
    round_to: int = 1
    block: int = 4
    banks: int | None = None
    bank_size: int | None = None
    permute: bool = False
    selector: str | None = None
    refit: bool = True
    calib_samples: int = 256
    regularizer: str | None = None
    reg_strength: float | None = None
    reg_groups: tuple[str, ...] = ("filter", "channel")
    reg_epochs: int = 4
    reg_lr: float = 0.01
    schedule: str = "oneshot"
    steps: int = 4
    step_epochs: int = 1
    tolerance: float | None = None
    target_params: float | None = None
    global_ranking: bool = False
    max_sparsity: float = 0.9
    layer_sparsity: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise UsageError(f"unknown pattern '{self.pattern}': choose one of {', '.join(PATTERNS)}")
        amounts = (
            ("--sparsity", self.sparsity),
            ("--target-macs", self.target_macs),
            ("--target-params", self.target_params),
            ("--max-sparsity", self.max_sparsity),
            *((f"--layer-sparsity {k}", v) for k, v in self.layer_sparsity.items()),
        )
        for label, value in amounts:
            if value is not None and not 0.0 < value < 1.0:
                raise UsageError(f"{label} must be between 0 and 1 (exclusive), got {value}")
        given = [label for label, value in amounts[:3] if value is not None]
        if len(given) > 1:
            raise UsageError(f"give one of --sparsity, --target-macs, --target-params, not {' and '.join(given)}")
        channel_only = {
            "--target-params": self.target_params is not None,
            "--global": self.global_ranking,
            "--layer-sparsity": bool(self.layer_sparsity),
        }
        for label, used in channel_only.items():
            if used and self.pattern != "channel":
                raise UsageError(f"{label} applies to the channel pattern only")
        if self.regularizer is not None and self.regularizer not in REGULARIZERS:
            raise UsageError(f"unknown regularizer '{self.regularizer}': choose one of {', '.join(REGULARIZERS)}")
        masked = self.pattern in MASK_PATTERNS and self.pattern != "nm"
        removes_zeros = self.regularizer in ("l1", "l1/2", "group-lasso")
        if masked and self.sparsity is None and not removes_zeros:
            raise UsageError(f"{self.pattern} pruning needs --sparsity")
        if (
            self.pattern == "channel"
            and not given
            and not self.layer_sparsity
            and not (removes_zeros and self.selector is None)
        ):
            raise UsageError("channel pruning needs --sparsity, --target-macs, --target-params or --layer-sparsity")
        if self.banks is not None and self.bank_size is not None:
            raise UsageError("give --banks or --bank-size, not both")
        for label, count in (("banks", self.banks), ("bank-size", self.bank_size), ("block", self.block)):
            if count is not None and count < 1:
                raise UsageError(f"{label} must be a positive integer, got {count}")
        if self.permute and self.pattern != "nm":
            raise UsageError("--permute applies to the nm pattern only")
        if self.selector is not None:
            if self.selector not in SELECTORS:
                raise UsageError(f"unknown selector '{self.selector}': choose one of {', '.join(SELECTORS)}")
            if self.pattern != "channel" or self.sparsity is None:
                raise UsageError("a channel selector needs --pattern channel and --sparsity")
        if self.regularizer is not None and self.reg_strength is not None and not self.reg_strength > 0:
            raise UsageError(f"regularization strength must be positive, got {self.reg_strength}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}")
        if self.schedule == "gradual":
            if self.sparsity is None or not (masked or self.pattern == "channel"):
                raise UsageError("the gradual schedule needs --sparsity and a channel or mask pattern (not nm)")
            if self.pattern == "channel" and (self.selector is not None or self.regularizer is not None):
                raise UsageError("the gradual channel schedule prunes by a criterion: drop --selector/--regularize")
            if self.steps < 1 or self.step_epochs < 0:
                raise UsageError("the gradual schedule needs at least one step and non-negative epochs")
        if self.tolerance is not None and (self.schedule != "gradual" or not 0.0 <= self.tolerance < 1.0):
            raise UsageError("--tolerance (in [0, 1)) applies to the gradual schedule only")

    @property
    def needs_data(self) -> bool:
        """Whether :func:`prune_model` needs data (a task) for this request."""
        return (
            self.regularizer is not None
            or self.selector is not None
            or self.schedule == "gradual"
            or (self.pattern == "channel" and self.criterion in DATA_CRITERIA)
        )


def default_ignore(model: nn.Module) -> frozenset[str]:
    """For masks: the first conv (few weights, sees the raw input) and the last linear (classifier).

    Both are conventionally left dense: they hold little of the cost and much of the accuracy.
    """
    layers = [p for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return frozenset(layers[:1] + [p for p in layers[-1:] if isinstance(dict(model.named_modules())[p], nn.Linear)])


def prune_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    request: PruneRequest,
    data: Task | tuple[torch.Tensor, ...] | None = None,
    progress: Progress | None = None,
) -> tuple[nn.Module, PrunePlan, dict[str, Any]]:
    """Prune a copy of ``model``; returns (pruned model, plan, summary). The input is untouched.

    Args:
        model: the trained model.
        input_shape: one sample's shape.
        request: pattern and method.
        data: a task (or ``(x, y[, x_val, y_val])`` tensors), for requests whose ``needs_data`` is true.
        progress: called with (label, step, total steps) during training-time methods.

    Raises:
        UsageError, GraphError, PruneError: with a message that says what to do.
    """
    if request.needs_data and data is None:
        raise UsageError(
            "this method needs training data (regularization, a data-aware selector or criterion, or the "
            "gradual schedule): give --data (from Python: data=Task or (x, y) tensors)"
        )
    data = as_task(data) if data is not None else None
    source, extra = model, {}
    if request.regularizer is not None:
        assert data is not None
        source, extra["regularization"] = _regularize(model, input_shape, request, data, progress)
    if request.pattern == "channel" and request.schedule == "gradual":
        assert data is not None
        pruned, plan, summary = _gradual_channels(source, input_shape, request, data, progress)
    elif request.pattern == "channel":
        pruned, plan, summary = _prune_channels(source, input_shape, request, data)
    else:
        pruned, plan, summary = _prune_masks(source, input_shape, request, data, progress)
    summary.update(extra)
    return pruned, plan, summary


def _regularize(
    model: nn.Module, input_shape: tuple[int, ...], request: PruneRequest, data: Task, progress: Progress | None
) -> tuple[nn.Module, dict[str, Any]]:
    from edgeprune.prune.regularize import Regularizer, RegularizerConfig, structure_report, train_regularized

    ignore = request.ignore or default_ignore(model)
    trained = copy.deepcopy(model)
    kind = request.regularizer or ""
    strength = request.reg_strength if request.reg_strength is not None else DEFAULT_STRENGTH[kind]
    config = RegularizerConfig(kind, strength, tuple(request.reg_groups), ignore)
    regularizer = Regularizer(trained, config, input_shape)
    train_regularized(
        trained,
        data,
        TrainConfig(epochs=request.reg_epochs, lr=request.reg_lr, seed=2),
        regularizer,
        on_step=_progress(progress, f"{config.kind} training"),
    )
    report: dict[str, Any] = {
        "kind": config.kind,
        "strength": config.strength,
        "epochs": request.reg_epochs,
        "groupings": list(config.groupings) if config.kind == "group-lasso" else None,
        "structure": structure_report(trained, ignore),
    }
    if data.has_val:
        report["accuracy"] = evaluate(trained, data)
    return trained, report


def _prune_channels(
    model: nn.Module, input_shape: tuple[int, ...], request: PruneRequest, data: Task | None
) -> tuple[nn.Module, PrunePlan, dict[str, Any]]:
    if request.selector is not None:
        from edgeprune.prune.reconstruct import ReconstructConfig, reconstruct_channels

        assert data is not None and request.sparsity is not None
        rebuilt = reconstruct_channels(
            model,
            input_shape,
            data.sample(request.calib_samples)[0],
            ReconstructConfig(
                sparsity=request.sparsity, selector=request.selector, refit=request.refit, ignore=request.ignore
            ),
        )
        summary = {
            "pattern": "channel",
            "selector": request.selector,
            "refit": request.refit,
            "layers": [{k: v for k, v in layer.items() if k != "selected"} for layer in rebuilt.layers],
        }
        return rebuilt.model, PrunePlan("channel", rebuilt.plan), summary
    if (
        request.regularizer is not None
        and request.sparsity is None
        and request.target_macs is None
        and request.target_params is None
        and not request.layer_sparsity
    ):
        from edgeprune.prune.regularize import remove_zero_channels, zero_masks

        pruned, plan, report = remove_zero_channels(model, input_shape, ignore=request.ignore)
        masks = zero_masks(pruned, request.ignore or default_ignore(pruned))
        summary = {"pattern": "channel", "removed": report}
        return pruned, PrunePlan("channel", plan, masks), summary
    criterion = "bn-scale" if request.regularizer == "bn-l1" and request.criterion == "l1" else request.criterion
    calibration = None
    if criterion in DATA_CRITERIA:
        assert data is not None
        images, labels = data.sample(request.calib_samples)
        calibration = [(images[i : i + 64], labels[i : i + 64]) for i in range(0, len(images), 64)]
    result = prune_channels(
        model,
        input_shape,
        ChannelConfig(
            sparsity=request.sparsity,
            target_macs=request.target_macs,
            target_params=request.target_params,
            criterion=criterion,
            ignore=request.ignore,
            round_to=request.round_to,
            max_sparsity=request.max_sparsity,
            global_ranking=request.global_ranking,
            layer_sparsity=dict(request.layer_sparsity),
            calibration=calibration,
            loss_fn=data.loss if data is not None else None,
        ),
    )
    summary = {
        "pattern": "channel",
        "criterion": criterion,
        "channel_ratio": result.ratio,
        "macs_before": result.macs_before,
        "macs_after": result.macs_after,
        "groups": result.groups,
    }
    return result.model, PrunePlan("channel", result.plan), summary


def _prune_masks(
    model: nn.Module,
    input_shape: tuple[int, ...],
    request: PruneRequest,
    data: Task | None,
    progress: Progress | None = None,
) -> tuple[nn.Module, PrunePlan, dict[str, Any]]:
    from edgeprune.prune.storage import storage_table, storage_totals

    ignore = request.ignore or default_ignore(model)
    summary: dict[str, Any] = {"pattern": request.pattern}
    source = model
    if request.permute:
        from edgeprune.prune.permute import permute_for_nm

        permutation = permute_for_nm(model, input_shape, request.n, request.m, ignore)
        source = permutation.model
        summary["permutation"] = {
            "kept_before": permutation.kept_before,
            "kept_after": permutation.kept_after,
            "gain": permutation.gain,
            "groups": permutation.groups,
        }
    options: dict[str, Any] = {"block": request.block, "banks": request.banks, "bank_size": request.bank_size}
    pruned = copy.deepcopy(source)
    if request.schedule == "gradual":
        assert data is not None and request.sparsity is not None
        masks, summary["schedule"] = _gradual(pruned, request, data, ignore, options, progress)
        reports = _reports(pruned, masks, request.pattern, ignore)
    elif request.regularizer is not None and request.sparsity is None:
        from edgeprune.prune.regularize import zero_masks

        masks = zero_masks(pruned, ignore)
        reports = _reports(pruned, masks, request.pattern, ignore)
    else:
        masks, mask_reports = make_masks(
            source, request.pattern, request.sparsity or 0.5, request.n, request.m, ignore, **options
        )
        reports = [{"module": r.module, "sparsity": r.sparsity, "skipped": r.skipped} for r in mask_reports]
        apply_masks(pruned, masks)
    summary.update(
        {
            "n_m": [request.n, request.m] if request.pattern == "nm" else None,
            "block": request.block if request.pattern == "block" else None,
            "banks": (request.banks or (None if request.bank_size else 4)) if request.pattern == "bank" else None,
            "bank_size": request.bank_size if request.pattern == "bank" else None,
            "ignored": sorted(ignore),
            "layers": reports,
            "storage": storage_totals(
                storage_table(
                    pruned,
                    n=request.n,
                    m=request.m,
                    block=request.block,
                    banks=request.banks,
                    bank_size=request.bank_size,
                )
            ),
        }
    )
    if request.pattern == "nm":
        summary["nm_check"] = [asdict(check) for check in validate_nm(pruned, request.n, request.m)]
    return pruned, PrunePlan(request.pattern, [], masks), summary


def _reports(
    model: nn.Module, masks: dict[str, torch.Tensor], pattern: str, ignore: frozenset[str]
) -> list[dict[str, Any]]:
    from edgeprune.prune.patterns import prunable_layers

    return [
        {
            "module": path,
            "sparsity": 1.0 - float(masks[path].float().mean()) if path in masks else 0.0,
            "skipped": None if path in masks else "no zeros",
        }
        for path in prunable_layers(model, ignore)
    ]


def _gradual_channels(
    model: nn.Module, input_shape: tuple[int, ...], request: PruneRequest, data: Task, progress: Progress | None
) -> tuple[nn.Module, PrunePlan, dict[str, Any]]:
    """Remove channels in ``request.steps`` steps on the cubic schedule, fine-tuning after each.

    Each step removes, from the channels still there, what brings the total removed to the
    schedule's target for that step (measured in channels actually left, so ``round_to`` does not
    make the error compound). With a tolerance, a step whose accuracy stays more than that below
    the unpruned model's after one extra fine-tuning round is withdrawn and the schedule stops.
    """
    from edgeprune.prune.plan import compose_structural
    from edgeprune.prune.schedule import cubic_schedule, floor, withdraw_rule

    assert request.sparsity is not None
    targets = cubic_schedule(request.sparsity, request.steps)

    def accuracy(current: nn.Module) -> float | None:
        return evaluate(current, data) if data.has_val else None

    def finetune(current: nn.Module, step: int, round_: int) -> None:
        if request.step_epochs > 0:
            recover(
                current,
                data,
                request.step_epochs,
                on_step=_progress(progress, f"gradual step {step} fine-tune"),
                seed=20 + 10 * step + round_,
            )

    reference = accuracy(model) if request.tolerance is not None else None
    current = copy.deepcopy(model)
    structural: list[dict[str, Any]] = []
    original_channels: int | None = None
    kept_channels: int | None = None
    history: list[dict[str, Any]] = []
    withdrawn: str | None = None
    macs_before = None
    for step, target in enumerate(targets, 1):
        fraction = 1.0 - (1.0 - target) * (original_channels or 1) / (kept_channels or 1)
        if fraction <= 0.0:  # rounding already took this step's channels
            continue
        result = prune_channels(
            current,
            input_shape,
            ChannelConfig(
                sparsity=min(fraction, 0.99),
                criterion=request.criterion,
                ignore=request.ignore,
                round_to=request.round_to,
                max_sparsity=request.max_sparsity,
                global_ranking=request.global_ranking,
            ),
        )
        size = sum(int(g["size"]) for g in result.groups)
        kept = sum(int(g["kept"]) for g in result.groups)
        candidate = result.model
        finetune(candidate, step, 0)
        acc = accuracy(candidate)
        record: dict[str, Any] = {
            "step": step,
            "sparsity": target,
            "step_fraction": fraction,
            "channels_kept": kept,
            "macs_after": result.macs_after,
            "accuracy": acc,
            "accepted": True,
        }
        lowest = floor(reference, request.tolerance)

        def retry(round_: int, candidate: nn.Module = candidate, step: int = step) -> float | None:
            finetune(candidate, step, round_)
            return accuracy(candidate)

        verdict = withdraw_rule(acc, lowest, retry)
        record["accuracy"] = verdict.accuracy
        if not verdict.accepted:
            assert lowest is not None and verdict.accuracy is not None
            record["accepted"] = False
            history.append(record)
            withdrawn = (
                f"step {step} withdrawn: accuracy {verdict.accuracy:.1%} stayed below {lowest:.1%} after an "
                f"extra fine-tuning round; the model of step {step - 1} is kept and the schedule stops"
            )
            break
        history.append(record)
        if original_channels is None:
            original_channels, macs_before = size, result.macs_before
        kept_channels = kept
        current, structural = candidate, compose_structural(structural, result.plan)
    summary = {
        "pattern": "channel",
        "criterion": request.criterion,
        "schedule": {
            "kind": "gradual (cubic, Zhu and Gupta), channels removed physically at each step",
            "steps": targets,
            "history": history,
            "withdrawn": withdrawn,
            "reference_accuracy": reference,
            "final_channel_sparsity": 1.0 - (kept_channels or original_channels or 1) / (original_channels or 1),
        },
        "macs_before": macs_before,
        "macs_after": next((h["macs_after"] for h in reversed(history) if h.get("accepted")), macs_before),
    }
    return current, PrunePlan("channel", structural), summary


def _gradual(
    model: nn.Module,
    request: PruneRequest,
    data: Task,
    ignore: frozenset[str],
    options: dict[str, Any],
    progress: Progress | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from edgeprune.prune.schedule import cubic_schedule, gradual_prune

    assert request.sparsity is not None
    steps = cubic_schedule(request.sparsity, request.steps)
    counter = iter(range(10_000))

    def mask_fn(current: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
        return make_masks(current, request.pattern, sparsity, request.n, request.m, ignore, **options)[0]

    def finetune(current: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        if request.step_epochs > 0:
            round_ = next(counter)
            recover(
                current,
                data,
                request.step_epochs,
                masks=masks,
                on_step=_progress(progress, f"gradual fine-tune {round_ + 1}"),
                seed=10 + round_,
            )

    def accuracy(current: nn.Module) -> float:
        return evaluate(current, data)

    result = gradual_prune(
        model, steps, mask_fn, finetune, accuracy if data.has_val else None, tolerance=request.tolerance
    )
    return result.masks, {
        "kind": "gradual (cubic, Zhu and Gupta)",
        "steps": steps,
        "history": result.history,
        "withdrawn": result.withdrawn,
        "reference_accuracy": result.reference_accuracy,
        "final_sparsity": result.final_sparsity,
    }


def _progress(progress: Progress | None, label: str) -> Callable[[int, int, str], None] | None:
    """The training loop's (step, total, note) callback as a labelled step of ``progress``."""
    if progress is None:
        return None
    return lambda step, total, note: progress(label, step, total)
