"""Data-aware channel pruning: LASSO channel selection and least-squares refit (He et al. ICCV'17).

Magnitude pruning is *matrix approximation*: it keeps the weights W' closest to W and hopes the
outputs follow. He et al. prune by *matrix regression*: keep the channels, and refit the weights,
so that the layer's outputs on real inputs are reproduced, ``Y ~ W' X``.

For a layer that reads C channels, sample N input patches X (im2col rows at random output
positions, ``points_per_image`` per image) and the original outputs Y. Channel c contributes
``Z_c = X_c W_c^T`` to ``Y = sum_c Z_c``. Channel selection solves

    min_beta  1 / (2 n) || vec(Y) - sum_c beta_c vec(Z_c) ||^2  +  alpha ||beta||_1

and searches alpha until the number of non-zero beta_c meets the target c'. The kept channels'
weights are then refit by least squares, ``W' = argmin || Y - X_kept W'^T ||``. Layers are done in
forward order, with X taken from the already-pruned network and Y from the original, so later
layers compensate for the error of earlier ones.

Selectors: ``lasso`` (the paper); ``omp`` (greedy L0: orthogonal matching pursuit picks c' channels
one at a time); ``l1/2`` (the non-convex |beta|^(1/2) penalty, solved by coordinate descent with the
half threshold); ``magnitude`` (the engine's L1 criterion: matrix approximation). Any of them with
``refit=False`` keeps the original weights of the kept channels.

The Lasso solver is our own coordinate descent on the Gram matrix ("covariance updates",
Friedman et al. 2007/2010), tested against scikit-learn's ``Lasso``; ``solver="sklearn"`` uses
scikit-learn's instead.

Which groups: a coupled-channel group is pruned here when it is not fixed and has exactly one
consumer, a Conv2d (groups=1) or Linear reading only that group's channels. In a ResNet those are
the channels inside each block (and the features before the classifier), as in the paper.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import PruneError, UsageError
from edgeprune.prune.criteria import get_criterion
from edgeprune.prune.graph import Group, build_groups
from edgeprune.prune.regularize import HALF_THRESHOLD_FACTOR
from edgeprune.prune.surgery import apply_structural, plan_from_groups
from edgeprune.vocab import SELECTORS


# -- solvers -----------------------------------------------------------------------------------
def soft_threshold_scalar(w: float, threshold: float) -> float:
    """Closed form of ``argmin_x 1/2 (x - w)^2 + threshold |x|``: w - t above t, w + t below -t, else 0."""
    return math.copysign(max(abs(w) - threshold, 0.0), w)


def half_threshold_scalar(w: float, threshold: float) -> float:
    """``argmin_x 1/2 (x - w)^2 + threshold |x|^(1/2)`` (see :func:`edgeprune.prune.regularize.half_threshold`)."""
    lam = 2.0 * threshold
    if lam <= 0:
        return w
    if abs(w) <= HALF_THRESHOLD_FACTOR * lam ** (2 / 3):
        return 0.0
    phi = math.acos(min(1.0, lam / 8 * (abs(w) / 3) ** -1.5))
    return 2 / 3 * w * (1 + math.cos(2 * math.pi / 3 - 2 / 3 * phi))


def lasso_cd(
    x: np.ndarray,
    y: np.ndarray,
    alpha: float,
    *,
    penalty: str = "l1",
    beta0: np.ndarray | None = None,
    max_iter: int = 1000,
    tol: float = 1e-8,
    gram: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Coordinate descent for ``min 1/(2n) ||y - x beta||^2 + alpha P(beta)`` (scikit-learn's Lasso objective).

    Each coordinate has a closed form: with ``r_j = (x_j^T y - sum_{k != j} x_j^T x_k beta_k) / n``
    and ``g_j = x_j^T x_j / n``, the L1 update is ``beta_j = S(r_j, alpha) / g_j`` (S the soft
    threshold), the L1/2 update the half threshold of ``r_j / g_j`` at ``alpha / g_j``. Updates use
    the Gram matrix, so one sweep costs O(p^2) whatever n is.

    Args:
        x: design, ``[n, p]``.
        y: target, ``[n]``.
        alpha: penalty weight.
        penalty: ``l1`` or ``l1/2``.
        beta0: warm start.
        max_iter: sweeps at most.
        tol: stop when no coefficient moves more than ``tol`` x the largest coefficient.
        gram: precomputed ``(x^T x / n, x^T y / n)``.
    """
    if gram is None:
        n = x.shape[0]
        g, c = x.T @ x / n, x.T @ y / n
    else:
        g, c = gram
    p = g.shape[0]
    beta = np.zeros(p) if beta0 is None else beta0.astype(np.float64).copy()
    diag = np.diag(g).copy()
    for _ in range(max_iter):
        biggest_move, biggest = 0.0, 0.0
        for j in range(p):
            if diag[j] <= 0:
                continue
            old = beta[j]
            r = c[j] - g[j] @ beta + diag[j] * old
            if penalty == "l1":
                new = soft_threshold_scalar(r, alpha) / diag[j]
            elif penalty == "l1/2":
                new = half_threshold_scalar(r / diag[j], alpha / diag[j])
            else:
                raise UsageError(f"unknown penalty '{penalty}': l1 or l1/2")
            beta[j] = new
            biggest_move = max(biggest_move, abs(new - old))
            biggest = max(biggest, abs(new))
        if biggest_move <= tol * max(biggest, 1e-12):
            break
    return beta


def lasso_sklearn(x: np.ndarray, y: np.ndarray, alpha: float, max_iter: int = 10000, tol: float = 1e-8) -> np.ndarray:
    """scikit-learn's Lasso on the same objective (no intercept), for comparison and as an option."""
    from sklearn.linear_model import Lasso

    model = Lasso(alpha=alpha, fit_intercept=False, max_iter=max_iter, tol=tol, precompute=True)
    model.fit(x, y)
    return np.asarray(model.coef_, dtype=np.float64)


def omp(x: np.ndarray, y: np.ndarray, k: int, gram: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Orthogonal matching pursuit: greedy L0, ``k`` columns; returns the coefficients (zeros elsewhere).

    Each step adds the column most correlated with the residual, then refits all chosen columns by
    least squares (which is what makes it *orthogonal*). Columns are compared after normalizing.
    """
    if gram is None:
        n = x.shape[0]
        g, c = x.T @ x / n, x.T @ y / n
    else:
        g, c = gram
    p = g.shape[0]
    scale = np.sqrt(np.clip(np.diag(g), 1e-300, None))
    chosen: list[int] = []
    coef = np.zeros(0)
    for _ in range(min(k, p)):
        residual_corr = c - (g[:, chosen] @ coef if chosen else 0.0)
        score = np.abs(residual_corr) / scale
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
        sub = g[np.ix_(chosen, chosen)]
        coef = np.linalg.lstsq(sub, c[chosen], rcond=None)[0]
    beta = np.zeros(p)
    beta[chosen] = coef
    return beta


def select_by_penalty(
    x: np.ndarray,
    y: np.ndarray,
    keep: int,
    *,
    penalty: str = "l1",
    solver: str = "cd",
    steps: int = 40,
    standardize: bool = False,
) -> tuple[list[int], np.ndarray, float]:
    """Search the penalty weight until ``keep`` coefficients are non-zero; return the ``keep`` largest.

    By default the columns are used as they are, as in He et al.'s code: every channel's current
    weights give ``beta = 1`` a perfect fit, and the penalty then drops the channels whose
    contribution is cheapest to lose. ``standardize`` scales columns to unit norm first (Friedman's
    standardized predictors), which ranks channels by direction only.

    The search is a bisection of log(alpha) between alpha_max (everything zero) and 1e-6 alpha_max;
    if no alpha gives exactly ``keep``, the smallest alpha found with more non-zeros is used and
    its ``keep`` largest coefficients win (He et al.'s code instead accepts a count slightly above
    the target).

    Returns:
        (selected column indices sorted, coefficients at the chosen alpha, alpha).
    """
    n, p = x.shape
    if not 0 < keep <= p:
        raise PruneError(f"cannot keep {keep} of {p} channels")
    norms = np.linalg.norm(x, axis=0) if standardize else np.ones(p)
    xs = x / np.clip(norms, 1e-300, None)
    gram = (xs.T @ xs / n, xs.T @ y / n)
    alpha_max = float(np.max(np.abs(gram[1]))) or 1.0
    lo, hi = np.log(alpha_max * 1e-6), np.log(alpha_max)

    def fit(alpha: float, warm: np.ndarray | None) -> np.ndarray:
        if solver == "sklearn" and penalty == "l1":
            return lasso_sklearn(xs, y, alpha)
        return lasso_cd(xs, y, alpha, penalty=penalty, beta0=warm, gram=gram, max_iter=300, tol=1e-6)

    best: tuple[np.ndarray, float] | None = None
    warm = None
    for _ in range(steps):
        alpha = float(np.exp((lo + hi) / 2))
        beta = fit(alpha, warm)
        count = int(np.count_nonzero(beta))
        if count >= keep:
            best, warm = (beta, alpha), beta
            if count == keep:
                break
            lo = np.log(alpha)
        else:
            hi = np.log(alpha)
    if best is None:
        beta = fit(float(np.exp(lo)), None)
        best = (beta, float(np.exp(lo)))
    beta, alpha = best
    # Rank by |beta|, ties (zeros) by correlation with the target.
    order = np.lexsort((-np.abs(gram[1]), -np.abs(beta)))
    return sorted(int(i) for i in order[:keep]), beta, alpha


# -- sampling a layer --------------------------------------------------------------------------
def capture_io(
    model: nn.Module, path: str, x: torch.Tensor, batch_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output of module ``path`` when ``model`` runs on ``x`` (eval mode)."""
    module = dict(model.named_modules())[path]
    inputs, outputs = [], []

    def hook(_: nn.Module, args: Any, out: torch.Tensor) -> None:
        inputs.append(args[0].detach())
        outputs.append(out.detach())

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start : start + batch_size])
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(inputs), torch.cat(outputs)


def layer_samples(
    module: nn.Module, x_in: torch.Tensor, y_out: torch.Tensor, points_per_image: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled im2col rows and outputs: patches ``[M, C, K]`` (K = kh*kw) and targets ``[M, O]`` (bias removed).

    For a Linear layer every sample is one row and K = 1 (a channel is one input feature).
    """
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise PruneError("grouped convolutions are not reconstructed")
        assert isinstance(module.padding, tuple)
        cols = F.unfold(
            x_in, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride
        )  # [N, C*K, L]
        n, _, positions = cols.shape
        k = module.kernel_size[0] * module.kernel_size[1]
        generator = torch.Generator().manual_seed(seed)
        count = min(points_per_image, positions)
        picks = torch.stack([torch.randperm(positions, generator=generator)[:count] for _ in range(n)])  # [N, P]
        patches = torch.gather(cols, 2, picks[:, None, :].expand(n, cols.shape[1], count))  # [N, C*K, P]
        patches = patches.permute(0, 2, 1).reshape(n * count, module.in_channels, k)
        outs = y_out.reshape(n, y_out.shape[1], -1)
        targets = torch.gather(outs, 2, picks[:, None, :].expand(n, outs.shape[1], count))
        targets = targets.permute(0, 2, 1).reshape(n * count, -1)
    elif isinstance(module, nn.Linear):
        patches, targets = x_in.unsqueeze(-1), y_out
    else:
        raise PruneError(f"cannot reconstruct a {type(module).__name__}")
    if module.bias is not None:
        targets = targets - module.bias.detach()
    return patches.double(), targets.double()


def contributions(patches: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-channel contributions ``Z[c] = X_c W_c^T``: ``[C, M, O]`` for patches ``[M, C, K]``."""
    w = weight.detach().double().reshape(weight.shape[0], patches.shape[1], patches.shape[2])  # [O, C, K]
    return torch.einsum("mck,ock->cmo", patches, w)


def least_squares(patches: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-8) -> torch.Tensor:
    """``W' = argmin ||targets - P W'^T||^2`` (tiny ridge for rank-deficient samples): ``[O, C*K]``."""
    p = patches.reshape(patches.shape[0], -1)
    gram = p.T @ p
    gram += ridge * torch.trace(gram) / gram.shape[0] * torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(gram, p.T @ targets).T


def relative_error(patches: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> float:
    """``||Y - P W^T||^2 / ||Y||^2`` of a layer's sampled outputs."""
    pred = patches.reshape(patches.shape[0], -1) @ weight.double().reshape(weight.shape[0], -1).T
    return float((targets - pred).pow(2).sum() / targets.pow(2).sum().clamp_min(1e-300))


# -- the pass over a model ---------------------------------------------------------------------
@dataclass(frozen=True)
class ReconstructConfig:
    """How to choose and refit channels.

    Attributes:
        sparsity: fraction of each pruned group's channels removed, in (0, 1).
        selector: a name in :data:`SELECTORS`.
        refit: refit the consumer's weights by least squares (matrix regression); False keeps
            them (matrix approximation).
        solver: ``cd`` (ours) or ``sklearn`` for the Lasso.
        points_per_image: sampled output positions per calibration image (He et al. use 10).
        holdout_fraction: calibration images kept back to measure the reconstruction error.
        ignore: producer module paths whose groups are left alone.
        seed: sampling seed.
    """

    sparsity: float = 0.5
    selector: str = "lasso"
    refit: bool = True
    solver: str = "cd"
    points_per_image: int = 10
    holdout_fraction: float = 0.25
    ignore: frozenset[str] = field(default_factory=frozenset)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.sparsity < 1.0:
            raise UsageError(f"sparsity must be between 0 and 1 (exclusive), got {self.sparsity}")
        if self.selector not in SELECTORS:
            raise UsageError(f"unknown selector '{self.selector}': choose one of {', '.join(SELECTORS)}")
        if self.solver not in ("cd", "sklearn"):
            raise UsageError(f"unknown solver '{self.solver}': cd or sklearn")


@dataclass
class ReconstructResult:
    """The pruned model, its structural plan, and per-layer figures (error on held-out samples)."""

    model: nn.Module
    plan: list[dict[str, Any]]
    layers: list[dict[str, Any]]


def reconstructable_groups(
    model: nn.Module, groups: list[Group], ignore: frozenset[str] = frozenset()
) -> list[tuple[Group, str]]:
    """(group, its single consumer) for every group this method can prune, in forward order."""
    modules = dict(model.named_modules())
    order = {path: i for i, path in enumerate(modules)}
    found = []
    for group in groups:
        if group.fixed is not None or any(m.module in ignore for m in group.producers) or not group.producers:
            continue
        consumers = [m.module for m in group.members if m.kind == "in"]
        if len(consumers) != 1:
            continue
        module = modules[consumers[0]]
        if isinstance(module, nn.Conv2d) and module.groups != 1 or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        places = [p for ch in group.channels for p in ch if p.kind == "in"]
        width = module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
        if len(places) != group.size or any(p.expand != 1 for p in places) or group.size != width:
            continue
        found.append((group, consumers[0]))
    return sorted(found, key=lambda item: order[item[1]])


def _select(
    cfg: ReconstructConfig,
    modules: dict[str, nn.Module],
    group: Group,
    z: torch.Tensor,
    targets: torch.Tensor,
    keep: int,
) -> tuple[list[int], float | None]:
    if cfg.selector == "magnitude":
        scores = get_criterion("l1")(modules, group, {"seed": cfg.seed})
        return sorted(torch.argsort(scores, descending=True, stable=True)[:keep].tolist()), None
    design = z.reshape(z.shape[0], -1).T.numpy()  # [M*O, C]
    target = targets.reshape(-1).numpy()
    if cfg.selector == "omp":
        norms = np.clip(np.linalg.norm(design, axis=0), 1e-300, None)
        beta = omp(design / norms, target, keep)
        return sorted(int(i) for i in np.flatnonzero(beta)), None
    penalty = "l1/2" if cfg.selector == "l1/2" else "l1"
    selected, _, alpha = select_by_penalty(design, target, keep, penalty=penalty, solver=cfg.solver)
    return selected, alpha


@torch.no_grad()
def reconstruct_channels(
    model: nn.Module, input_shape: tuple[int, ...], calibration: torch.Tensor, config: ReconstructConfig
) -> ReconstructResult:
    """Prune every reconstructable group of a copy of ``model`` by ``config``; the input is untouched.

    Args:
        model: the trained model.
        input_shape: one sample's shape.
        calibration: input images (no labels needed); a part is held out for the error figures.
        config: selector, refit and sampling.

    Raises:
        PruneError: no group of the model can be pruned this way.
    """
    original = copy.deepcopy(model).eval()
    working = copy.deepcopy(model).eval()  # the original with refit weights written in (full width)
    groups = build_groups(original, torch.zeros(2, *input_shape))
    targets_list = reconstructable_groups(original, groups, config.ignore)
    if not targets_list:
        raise PruneError("no channel group with a single Conv2d/Linear consumer to reconstruct")
    split = max(1, int(round(len(calibration) * (1 - config.holdout_fraction))))
    fit_x, held_x = calibration[:split], calibration[split:] if split < len(calibration) else calibration
    keep: dict[int, list[int]] = {}
    report = []
    originals = dict(original.named_modules())
    for step, (group, consumer) in enumerate(targets_list):
        current = apply_structural(copy.deepcopy(working), plan_from_groups(original, groups, keep)).eval()
        layer = dict(current.named_modules())[consumer]
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        samples = {}
        for label, xs in (("fit", fit_x), ("held", held_x)):
            x_in, _ = capture_io(current, consumer, xs)
            _, y_out = capture_io(original, consumer, xs)
            samples[label] = layer_samples(layer, x_in, y_out, config.points_per_image, config.seed + step)
        patches, targets = samples["fit"]
        count = max(1, int(round(group.size * (1 - config.sparsity))))
        channel_of = [next(p.index for p in ch if p.kind == "in") for ch in group.channels]  # group -> consumer
        z = contributions(patches, weight)[channel_of]
        chosen, alpha = _select(config, originals, group, z, targets, count)
        columns = [channel_of[c] for c in chosen]
        held_p, held_t = samples["held"]
        error_before = relative_error(held_p, held_t, weight)
        kept_w = weight.detach().double().reshape(weight.shape[0], patches.shape[1], -1)[:, columns]
        if config.refit:
            kept_w = least_squares(patches[:, columns], targets).reshape(kept_w.shape)
        error = relative_error(held_p[:, columns], held_t, kept_w)
        full = torch.zeros_like(dict(working.named_modules())[consumer].weight)  # type: ignore[arg-type]
        full_view = full.reshape(full.shape[0], patches.shape[1], -1)
        full_view[:, columns] = kept_w.to(full.dtype)
        dict(working.named_modules())[consumer].weight.copy_(full)  # type: ignore[operator]
        keep[group.id] = chosen
        report.append(
            {
                "group": group.id,
                "consumer": consumer,
                "producers": [m.module for m in group.producers],
                "channels": group.size,
                "kept": count,
                "selected": chosen,
                "alpha": alpha,
                "error_dense_input": error_before,
                "relative_error": error,
                "samples": int(patches.shape[0]),
            }
        )
    plan = plan_from_groups(original, groups, keep)
    pruned = apply_structural(copy.deepcopy(working), plan).eval()
    return ReconstructResult(pruned, plan, report)
