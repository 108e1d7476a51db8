"""The bundle contract: a folder (or .tar.gz) that carries a model from the host to the device.

A bundle holds ``manifest.json``, ``model.onnx``, ``reference.npz`` and optionally ``calib.npz``
(INT8: the calibration samples used) and ``model_fp32.onnx`` (FP16: the FP32 model, for a
TensorRT 10 build with the FP16 flag). The manifest records what the model is, how it was pruned,
what it costs and the sha256 of every other file, so the device can refuse a bundle that was
damaged or tampered with on the way.

Schema 1 grows only by optional fields: a reader checks the required ones and the type of each
optional one it knows (``precision_detail``, ``calibration``, ``fp16``, ``batch_sizes``), and ignores
the rest, so a newer packager's bundle still reads here as long as ``schema_version`` is 1.

This module must import without torch (the device has none): it uses only the standard library
and numpy.

Example manifest (abridged)::

    {"schema_version": 1, "name": "nm-2:4", "precision": "fp32",
     "model": {"spec": "digits-resnet", "pattern": "nm", "summary": {...}},
     "inputs": [{"name": "input", "shape": ["batch", 1, 32, 32], "dtype": "float32"}],
     "outputs": [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}],
     "sparsity": {"pattern": "nm", "layers": [...]}, "cost": {...}, "parity": {...},
     "files": {"model.onnx": "<sha256>", "reference.npz": "<sha256>"}, "tool_versions": {...}}
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from edgeprune.errors import BundleError
from edgeprune.vocab import CALIB_METHODS, PRECISIONS

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"

# Fields every schema-1 manifest must carry, with the type each must have.
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "name": str,
    "precision": str,
    "model": dict,
    "inputs": list,
    "outputs": list,
    "sparsity": dict,
    "cost": dict,
    "parity": dict,
    "files": dict,
    "tool_versions": dict,
}
# Optional schema-1 fields, checked for type when present.
OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "precision_detail": dict,
    "calibration": dict,
    "fp16": dict,
    "batch_sizes": list,
    "created_utc": str,
    "onnx_opset": int,
    "lint": list,
}
# Top-level fields of an ONNX ModelProto and their protobuf wire types (0 varint, 2 length-delimited).
_MODELPROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks so large engines do not fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _fail(message: str) -> NoReturn:
    raise BundleError(f"{message}: repackage the model")


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a bundle's model.

    Attributes:
        name: the ONNX graph's name for it, the key in feeds and in ``reference.npz``.
        shape: dimensions; a string is symbolic (``"batch"``), set when the model is fed.
        dtype: a numpy dtype name (``float32``).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"name", "shape" (a list), "dtype"}``."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TensorSpec:
        """Read one spec, refusing anything without a name, a shape list and a dtype."""
        if not (
            isinstance(data, dict)
            and isinstance(data.get("name"), str)
            and isinstance(data.get("shape"), list)
            and all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in data["shape"])
            and isinstance(data.get("dtype"), str)
        ):
            _fail(f"manifest {where} needs a name, a shape list and a dtype")
        return cls(name=data["name"], shape=tuple(data["shape"]), dtype=data["dtype"])


@dataclass(frozen=True)
class ModelInfo:
    """What the bundle's model is: where it came from, how it was pruned, how accurate it is.

    Attributes:
        spec: the model spec it was built from (``digits-resnet``, ``torchvision:resnet18``, a folder).
        pattern: the pruning pattern (a :data:`edgeprune.vocab.PATTERNS` name), None when dense.
        accuracy: this bundle's own metric on held-out data (ONNX Runtime), or None with no data.
        summary: the pruner's summary (see ``edgeprune.prune.summary``), empty for a dense model.
        extra: the rest (``metric``, ``accuracy_source``, ``accuracy_pytorch``, ...), kept as written.
    """

    spec: str | None = None
    pattern: str | None = None
    accuracy: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finetuned(self) -> bool | None:
        """False for a pruned model packaged without fine-tuning; None when the pruner did not say."""
        value = self.summary.get("finetuned")
        return value if isinstance(value, bool) else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with the extra fields beside the known ones."""
        known = {"spec": self.spec, "pattern": self.pattern, "accuracy": self.accuracy, "summary": self.summary}
        return {**self.extra, **known}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        """Read the ``model`` section, checking the type of each known field."""
        accuracy = data.get("accuracy")
        if accuracy is not None and (isinstance(accuracy, bool) or not isinstance(accuracy, (int, float))):
            _fail(f"manifest model.accuracy {accuracy!r} is not a number")
        for key in ("spec", "pattern"):
            if data.get(key) is not None and not isinstance(data[key], str):
                _fail(f"manifest model.{key} is not a string")
        summary = data.get("summary") or {}
        if not isinstance(summary, dict):
            _fail("manifest model.summary is not an object")
        known = {"spec", "pattern", "accuracy", "summary"}
        return cls(
            spec=data.get("spec"),
            pattern=data.get("pattern"),
            accuracy=None if accuracy is None else float(accuracy),
            summary=summary,
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest (schema 1): the one definition written by the packager and read on the device.

    ``sparsity``, ``cost`` and ``parity`` are sections whose keys depend on the pattern and the
    precision (see :mod:`edgeprune.export.package`); the reader checks what it relies on
    (``parity.atol``, ``calibration``) and keeps the rest as written. Fields a newer schema-1 writer
    adds are kept in ``extra``, so a manifest read and written again loses nothing.

    Attributes:
        name: the variant's name (``channel-50mac``), the label in result records.
        precision: one of :data:`PRECISIONS`.
        model: see :class:`ModelInfo`.
        inputs: the model's inputs, in order.
        outputs: the model's outputs, in order.
        sparsity: ``pattern``, per-layer ``layers`` (2:4 eligibility and reasons), ``sparse_weights``.
        cost: MACs, effective MACs, parameters, bytes, ``theoretical_speedup`` and its label.
        parity: the export check: ``atol`` (what the device's reference check allows), ``atol_tensorrt``,
            ``output_scale`` and how they were judged.
        tool_versions: library -> version on the host that packaged it.
        files: bundle file name -> sha256 (filled in by :func:`write_bundle`).
        precision_detail: how each runtime should treat the precision.
        calibration: INT8 only: method, sample count, digest, Q/DQ counts.
        fp16: FP16 only: how the conversion was done.
        batch_sizes: the batch sizes it was packaged for.
        created_utc: ISO time of packaging.
        onnx_opset: the ONNX opset of ``model.onnx``.
        lint: cost warnings (layers whose widths the kernels dislike).
        extra: fields this version does not know.
        schema_version: always :data:`SCHEMA_VERSION` when written by this version.
    """

    name: str
    precision: str
    model: ModelInfo
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sparsity: dict[str, Any]
    cost: dict[str, Any]
    parity: dict[str, Any]
    tool_versions: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    precision_detail: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    fp16: dict[str, Any] | None = None
    batch_sizes: tuple[int, ...] | None = None
    created_utc: str | None = None
    onnx_opset: int | None = None
    lint: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def pattern(self) -> str | None:
        """The sparsity pattern the bundle was pruned with (None for a dense model)."""
        pattern = self.sparsity.get("pattern")
        return pattern if isinstance(pattern, str) else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``manifest.json``; optional fields that are None are left out."""
        data: dict[str, Any] = {
            **self.extra,
            "schema_version": self.schema_version,
            "name": self.name,
            "precision": self.precision,
            "model": self.model.to_dict(),
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "sparsity": self.sparsity,
            "cost": self.cost,
            "parity": self.parity,
            "tool_versions": self.tool_versions,
            "files": self.files,
        }
        for key in OPTIONAL_FIELDS:
            value = getattr(self, key)
            if value is not None:
                data[key] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Read and validate a manifest (see :func:`validate_manifest` for what is checked).

        Raises:
            BundleError: naming the first missing or mistyped field, or an unknown schema version.
        """
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version {version!r} is not supported (this edgeprune reads {SCHEMA_VERSION}); "
                "repackage the model with a matching edgeprune version"
            )
        for key, kind in REQUIRED_FIELDS.items():
            if key not in data:
                _fail(f"manifest is missing the field '{key}'")
            if not isinstance(data[key], kind):
                _fail(f"manifest field '{key}' has the wrong type")
        for key, kind in OPTIONAL_FIELDS.items():
            if data.get(key) is not None and not isinstance(data[key], kind):
                _fail(f"manifest field '{key}' has the wrong type")
        if data["precision"] not in PRECISIONS:
            raise BundleError(f"manifest precision {data['precision']!r} is not one of {PRECISIONS}")
        files = data["files"]
        if MODEL_FILE not in files:
            _fail(f"manifest lists no {MODEL_FILE}")
        for name, digest in files.items():
            if not _is_plain_name(name):
                raise BundleError(f"manifest names an unsafe file path {name!r}")
            if not isinstance(digest, str):
                _fail(f"manifest gives no sha256 for {name}")
        specs: dict[str, tuple[TensorSpec, ...]] = {}
        for key in ("inputs", "outputs"):
            if not data[key]:
                _fail(f"manifest field '{key}' is empty")
            specs[key] = tuple(TensorSpec.from_dict(spec, f"{key}[{i}]") for i, spec in enumerate(data[key]))
        atol = data["parity"].get("atol")
        if atol is not None and (isinstance(atol, bool) or not isinstance(atol, (int, float)) or atol < 0):
            _fail(f"manifest parity.atol {atol!r} is not a non-negative number")
        calibration = data.get("calibration")
        if calibration is not None:
            if calibration.get("method") not in CALIB_METHODS:
                _fail(f"manifest calibration.method {calibration.get('method')!r} is not one of {CALIB_METHODS}")
            samples = calibration.get("samples")
            if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
                _fail(f"manifest calibration.samples {samples!r} is not a positive count")
        batch_sizes = data.get("batch_sizes")
        known = {*REQUIRED_FIELDS, *OPTIONAL_FIELDS}
        return cls(
            name=data["name"],
            precision=data["precision"],
            model=ModelInfo.from_dict(data["model"]),
            inputs=specs["inputs"],
            outputs=specs["outputs"],
            sparsity=data["sparsity"],
            cost=data["cost"],
            parity=data["parity"],
            tool_versions=data["tool_versions"],
            files=dict(files),
            precision_detail=data.get("precision_detail"),
            calibration=calibration,
            fp16=data.get("fp16"),
            batch_sizes=None if batch_sizes is None else tuple(batch_sizes),
            created_utc=data.get("created_utc"),
            onnx_opset=data.get("onnx_opset"),
            lint=data.get("lint"),
            extra={k: v for k, v in data.items() if k not in known},
            schema_version=version,
        )


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Check a manifest's JSON form against schema 1 (:meth:`Manifest.from_dict`, result dropped).

    Raises:
        BundleError: naming the first missing or mistyped field, or an unknown schema version.
    """
    Manifest.from_dict(manifest)


def _is_plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def check_replaceable(directory: Path) -> None:
    """Refuse to write a bundle over a folder that holds something other than a bundle.

    Writing replaces the whole folder, so an existing non-empty folder without a manifest (someone's
    data, a typo in ``--out``) must never be deleted.

    Raises:
        BundleError: the path is a file, or a non-empty folder that is not a bundle.
    """
    directory = Path(directory)
    if directory.is_file():
        raise BundleError(f"{directory} is a file, not a bundle folder: choose another output")
    if directory.is_dir() and not (directory / MANIFEST).is_file() and any(directory.iterdir()):
        raise BundleError(f"{directory} exists and is not a bundle: choose another output (it would be replaced)")


def write_bundle(directory: Path, manifest: Manifest, files: Mapping[str, Path]) -> Path:
    """Write a bundle atomically: build it in a temporary sibling folder, then rename it into place.

    Args:
        directory: the bundle folder to create; an existing bundle there is replaced only once the
            new one is complete, so a failure leaves the old one untouched.
        manifest: the manifest; its ``files`` are filled in here from what is copied.
        files: bundle file name -> source path; each is copied and hashed.

    Raises:
        BundleError: if the finished manifest does not validate, or ``directory`` holds something
            other than a bundle (see :func:`check_replaceable`).
    """
    directory = Path(directory)
    check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        hashes: dict[str, str] = {}
        for name, source in files.items():
            target = staging / name
            shutil.copyfile(source, target)
            hashes[name] = sha256_file(target)
        full = replace(manifest, files=hashes, schema_version=SCHEMA_VERSION).to_dict()
        validate_manifest(full)
        (staging / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
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


def read_manifest(directory: Path, verify: bool = True, check_model: bool = False) -> Manifest:
    """Read and validate a bundle's manifest, and by default verify every file's checksum.

    Args:
        directory: the bundle folder.
        verify: check every listed file's sha256.
        check_model: also check that ``model.onnx`` is structurally an ONNX model (see
            :func:`check_model_file`); the packager does this on every bundle it writes.

    Raises:
        BundleError: the folder is not a bundle, the manifest is malformed, a checksum fails, or
            (with ``check_model``) the model file is not ONNX.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not a bundle: it has no {MANIFEST} (make one with `edgeprune package`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object")
    manifest = Manifest.from_dict(data)
    if verify:
        verify_files(directory, manifest)
    if check_model:
        check_model_file(directory / MODEL_FILE)
    return manifest


def _varint(fh: io.BufferedReader) -> int | None:
    """Read one protobuf varint; None at a clean end of file."""
    value, shift = 0, 0
    while True:
        byte = fh.read(1)
        if not byte:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def check_model_file(path: Path) -> None:
    """Check that a file is an ONNX ``ModelProto`` without importing onnx (the device may lack it).

    Walks the top-level protobuf fields: each must be a ModelProto field with its proper wire
    type, every length must fit in the file, and ``ir_version`` and ``graph`` must be present.
    Garbage, a truncated file or another format fails within the first bytes; a well-formed but
    semantically wrong graph is left to the runtime's parser.

    Raises:
        BundleError: the file is missing or is not an ONNX model.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"bundle file {path.name} is missing from {path.parent}")
    size = path.stat().st_size
    seen: set[int] = set()
    try:
        with path.open("rb") as fh:
            while (key := _varint(fh)) is not None:
                number, wire = key >> 3, key & 7
                expected = _MODELPROTO_FIELDS.get(number, wire)  # unknown (newer) fields: any valid type
                if number == 0 or wire not in (0, 1, 2, 5) or wire != expected:
                    raise ValueError(f"unexpected field {number} (wire type {wire}) at byte {fh.tell()}")
                if wire == 0:
                    if _varint(fh) is None:
                        raise ValueError("truncated value")
                elif wire in (1, 5):
                    fh.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                    if fh.tell() > size:
                        raise ValueError("a value runs past the end of the file")
                else:
                    length = _varint(fh)
                    if length is None or fh.tell() + length > size:
                        raise ValueError("a length runs past the end of the file")
                    fh.seek(length, os.SEEK_CUR)
                seen.add(number)
    except ValueError as err:
        raise BundleError(f"bundle file {path.name} is not an ONNX model ({err}): package the model again") from err
    if not {1, 7} <= seen:
        raise BundleError(
            f"bundle file {path.name} is not an ONNX model (no ir_version or graph): package the model again"
        )


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Check that every file the manifest lists exists and matches its sha256.

    Raises:
        BundleError: naming the first file that is missing or whose checksum does not match.
    """
    for name, expected in manifest.files.items():
        path = Path(directory) / name
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing from {directory}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"bundle file {name} fails its checksum (expected {expected[:12]}…, got {actual[:12]}…): "
                "the bundle was modified or damaged; package it again"
            )


def pack_bundle(directory: Path, archive: Path) -> Path:
    """Pack a verified bundle folder into a ``.tar.gz`` whose members sit at the archive root."""
    manifest = read_manifest(directory)
    archive = Path(archive)
    tmp = archive.with_name(archive.name + ".part")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in [MANIFEST, *sorted(manifest.files)]:
                tar.add(Path(directory) / name, arcname=name, recursive=False)
        tmp.replace(archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return archive


def unpack_bundle(data: bytes | Path, dest: Path, max_bytes: int = 512 << 20) -> Manifest:
    """Safely extract a bundle archive into ``dest`` and verify it.

    Only regular files with plain names at the archive root are accepted: absolute paths, ``..``,
    folders, links and device files are refused before anything is written, so a hostile archive
    cannot write outside ``dest``. Nothing is unpickled.

    Args:
        data: the archive bytes, or a path to it.
        dest: a folder that must not exist yet; on any failure it is removed again.
        max_bytes: refuse archives whose members add up to more than this.

    Raises:
        BundleError: the archive is unreadable, truncated, unsafe, too large or fails its checksums.
    """
    dest = Path(dest)
    if dest.exists():
        raise BundleError(f"{dest} already exists")
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            members = tar.getmembers()
            total = 0
            for member in members:
                if not member.isfile():
                    raise BundleError(
                        f"archive member {member.name!r} is not a regular file (links and folders are refused)"
                    )
                if not _is_plain_name(member.name) or os.path.isabs(member.name):
                    raise BundleError(f"archive member {member.name!r} has an unsafe path")
                total += member.size
                if total > max_bytes:
                    raise BundleError(f"archive unpacks to more than {max_bytes} bytes")
            dest.mkdir(parents=True)
            try:
                for member in members:
                    source = tar.extractfile(member)
                    if source is None:
                        raise BundleError(f"archive member {member.name!r} cannot be read")
                    with (dest / member.name).open("wb") as out:
                        shutil.copyfileobj(source, out)
                return read_manifest(dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
    except (tarfile.TarError, EOFError, OSError, _zlib_error()) as err:
        raise BundleError(f"archive is not a readable .tar.gz (truncated or corrupt?): {err}") from err


def _zlib_error() -> type[Exception]:
    import zlib

    return zlib.error
