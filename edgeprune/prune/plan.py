"""The pruned-model folder: ``model.json``, ``plan.json``, ``weights.safetensors``. No pickle.

Loading rebuilds the source architecture from its spec, replays the structural plan (which makes
every module the right size), loads the weights, and re-applies any masks. The plan is plain
JSON, so a user can read exactly which channels of which layer were kept.

``plan.json``::

    {"version": 1, "pattern": "channel", "structural": [{"module": "stem.0", "type": "Conv2d",
     "out_keep": [0, 3, ...]}, ...], "masks": {"layer1.conv1": {"shape": [16, 16, 3, 3],
     "packed": "<base64 of numpy.packbits>"}}}
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.prune.surgery import apply_structural

PLAN_VERSION = 1


@dataclass
class PrunePlan:
    """What was done to a source model, replayable on a fresh copy of it."""

    pattern: str
    structural: list[dict[str, Any]] = field(default_factory=list)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "pattern": self.pattern,
            "structural": self.structural,
            "masks": {path: encode_mask(mask) for path, mask in self.masks.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrunePlan:
        if data.get("version") != PLAN_VERSION:
            raise UsageError(f"plan version {data.get('version')!r} is not supported (expected {PLAN_VERSION})")
        masks = {path: decode_mask(m) for path, m in data.get("masks", {}).items()}
        return cls(data["pattern"], list(data.get("structural", [])), masks)

    def apply(self, model: nn.Module) -> nn.Module:
        """Replay on a freshly built source model: slice, then mask (weights are loaded after)."""
        apply_structural(model, self.structural)
        return model


def compose_structural(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One plan equal to replaying ``first`` and then ``second``.

    ``second``'s indices count the channels left by ``first``, so each of its keep lists is mapped
    through ``first``'s; a module only one plan touches keeps that plan's entry. Gradual channel
    pruning composes its steps this way, so ``plan.json`` replays the whole schedule in one pass.
    """
    merged = {entry["module"]: dict(entry) for entry in first}
    order = [entry["module"] for entry in first]
    for entry in second:
        path = entry["module"]
        base = merged.get(path)
        if base is None:
            merged[path] = dict(entry)
            order.append(path)
            continue
        combined = dict(base)
        for key in ("out_keep", "in_keep"):
            if key in entry:
                combined[key] = [base[key][i] for i in entry[key]] if key in base else list(entry[key])
        if entry.get("params"):
            params = {attr: dict(dims) for attr, dims in (base.get("params") or {}).items()}
            for attr, dims in entry["params"].items():
                for dim, keep in dims.items():
                    old = params.get(attr, {}).get(dim)
                    params.setdefault(attr, {})[dim] = [old[i] for i in keep] if old is not None else list(keep)
            combined["params"] = params
        merged[path] = combined
    return [merged[path] for path in order]


def encode_mask(mask: torch.Tensor) -> dict[str, Any]:
    """A bool mask as its shape and base64 of packed bits (1 bit per weight)."""
    bits = np.packbits(mask.detach().cpu().numpy().astype(bool).ravel())
    return {"shape": list(mask.shape), "packed": base64.b64encode(bits.tobytes()).decode("ascii")}


def decode_mask(data: dict[str, Any]) -> torch.Tensor:
    shape = tuple(int(d) for d in data["shape"])
    count = int(np.prod(shape)) if shape else 1
    bits = np.frombuffer(base64.b64decode(data["packed"]), dtype=np.uint8)
    return torch.from_numpy(np.unpackbits(bits)[:count].astype(bool).reshape(shape))


def save_pruned(directory: Path, model: nn.Module, plan: PrunePlan, meta: dict[str, Any]) -> Path:
    """Write a pruned-model folder atomically (a failure leaves any existing folder untouched).

    Args:
        directory: the folder to create or replace.
        model: the pruned model, weights included.
        plan: how it was made from the source.
        meta: ``model.json`` content; must include ``source`` (the model spec) and ``input_shape``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / "weights.safetensors"))
        (staging / "plan.json").write_text(json.dumps(plan.to_json()) + "\n")
        (staging / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        # mkdtemp makes the folder private (0700); give it the permissions of an ordinary folder.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def is_pruned_folder(path: Path) -> bool:
    return (Path(path) / "model.json").is_file() and (Path(path) / "plan.json").is_file()


def read_meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((Path(directory) / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{directory}/model.json cannot be read: {err}") from err
    if not isinstance(meta, dict) or "source" not in meta or "input_shape" not in meta:
        raise UsageError(f"{directory}/model.json must name 'source' and 'input_shape'")
    return meta


def read_plan(directory: Path) -> PrunePlan:
    try:
        return PrunePlan.from_json(json.loads((Path(directory) / "plan.json").read_text()))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise UsageError(f"{directory}/plan.json cannot be read: {err}") from err
