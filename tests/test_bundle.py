"""The bundle contract: atomic writes, validation, checksums, and safe archive extraction."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeprune import bundle
from edgeprune.errors import BundleError


def manifest(**over) -> bundle.Manifest:
    base = bundle.Manifest(
        name="tiny",
        precision="fp32",
        model=bundle.ModelInfo(spec="tiny"),
        inputs=(bundle.TensorSpec("input", ("batch", 4)),),
        outputs=(bundle.TensorSpec("logits", ("batch", 2)),),
        sparsity={"pattern": "dense", "layers": []},
        cost={"macs": 8},
        parity={"atol": 1e-4},
    )
    return replace(base, **over)


@pytest.fixture
def made(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"not really onnx, but hashed all the same")
    np.savez(src / "reference.npz", x=np.zeros(3))
    return bundle.write_bundle(
        tmp_path / "b", manifest(), {"model.onnx": src / "model.onnx", "reference.npz": src / "reference.npz"}
    )


def test_roundtrip_records_checksums(made: Path) -> None:
    read = bundle.read_manifest(made)
    assert read.schema_version == bundle.SCHEMA_VERSION
    assert set(read.files) == {"model.onnx", "reference.npz"}
    assert read.files["model.onnx"] == bundle.sha256_file(made / "model.onnx")


def test_tampered_file_is_refused(made: Path) -> None:
    with (made / "model.onnx").open("ab") as fh:
        fh.write(b"!")
    with pytest.raises(BundleError, match="fails its checksum"):
        bundle.read_manifest(made)


@pytest.mark.parametrize("field", ["name", "inputs", "files", "precision"])
def test_missing_field_is_named(made: Path, field: str) -> None:
    data = json.loads((made / "manifest.json").read_text())
    del data[field]
    (made / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=f"'{field}'"):
        bundle.read_manifest(made)


def test_unknown_schema_version(made: Path) -> None:
    data = json.loads((made / "manifest.json").read_text())
    data["schema_version"] = 99
    (made / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="schema_version 99"):
        bundle.read_manifest(made)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a bundle"):
        bundle.read_manifest(tmp_path)


def test_failed_write_leaves_old_bundle(made: Path, tmp_path: Path) -> None:
    before = (made / "manifest.json").read_text()
    with pytest.raises(BundleError):
        bundle.write_bundle(made, manifest(precision="fp64"), {"model.onnx": made / "model.onnx"})
    assert (made / "manifest.json").read_text() == before
    assert not [p for p in made.parent.iterdir() if p.name.startswith(".b.")]


def test_pack_unpack(made: Path, tmp_path: Path) -> None:
    archive = bundle.pack_bundle(made, tmp_path / "b.tar.gz")
    read = bundle.unpack_bundle(archive, tmp_path / "out")
    assert read.name == "tiny"
    assert (tmp_path / "out" / "model.onnx").read_bytes() == (made / "model.onnx").read_bytes()


def _tar(members: list[tarfile.TarInfo], payload: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in members:
            if info.isfile():
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,kind",
    [
        ("../evil", tarfile.REGTYPE),
        ("/etc/evil", tarfile.REGTYPE),
        ("sub/evil", tarfile.REGTYPE),
        ("link", tarfile.SYMTYPE),
        ("dev", tarfile.CHRTYPE),
    ],
)
def test_unsafe_archives_are_refused_and_write_nothing(tmp_path: Path, name: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    dest = tmp_path / "store" / "x"
    with pytest.raises(BundleError):
        bundle.unpack_bundle(_tar([info]), dest)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists()


def test_truncated_archive(made: Path, tmp_path: Path) -> None:
    data = bundle.pack_bundle(made, tmp_path / "b.tar.gz").read_bytes()
    with pytest.raises(BundleError, match="truncated or corrupt"):
        bundle.unpack_bundle(data[: len(data) // 2], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_with_tampered_member(made: Path, tmp_path: Path) -> None:
    (made / "model.onnx").write_bytes(b"swapped")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("manifest.json", "model.onnx", "reference.npz"):
            tar.add(made / name, arcname=name)
    with pytest.raises(BundleError, match="checksum"):
        bundle.unpack_bundle(buf.getvalue(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_size_limit(made: Path, tmp_path: Path) -> None:
    data = bundle.pack_bundle(made, tmp_path / "b.tar.gz").read_bytes()
    with pytest.raises(BundleError, match="more than"):
        bundle.unpack_bundle(data, tmp_path / "out", max_bytes=10)


def test_manifest_round_trip_keeps_unknown_fields(made: Path) -> None:
    # A newer schema-1 writer's extra fields (top level and inside ``model``) survive a read and a write.
    data = json.loads((made / "manifest.json").read_text())
    data["from_the_future"] = {"x": 1}
    data["model"]["metric"] = "top-1"
    read = bundle.Manifest.from_dict(data)
    assert read.extra == {"from_the_future": {"x": 1}} and read.model.extra == {"metric": "top-1"}
    assert read.to_dict() == data
    assert read.inputs == (bundle.TensorSpec("input", ("batch", 4)),)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("inputs", [{"name": "input", "shape": "batch,4", "dtype": "float32"}], "inputs\\[0\\] needs"),
        ("model", {"spec": "tiny", "accuracy": "high"}, "model.accuracy"),
        ("lint", {"not": "a list"}, "'lint' has the wrong type"),
        ("files", {"reference.npz": "abc"}, "lists no model.onnx"),
    ],
)
def test_manifest_refuses_mistyped_fields(made: Path, field: str, value: object, message: str) -> None:
    data = json.loads((made / "manifest.json").read_text())
    data[field] = value
    with pytest.raises(BundleError, match=message):
        bundle.Manifest.from_dict(data)
