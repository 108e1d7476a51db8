"""The rules of the house that the import graph can check: no cycles, and a device side apart."""

from __future__ import annotations

import subprocess
import sys

from tests.house.imports import cycles, graph

# What the device side may import: the bundle and result-record contracts, the N:M rule, the vocabulary and the
# errors. Never torch
# (checked at run time below), never the host's packages (checked here, imports inside functions too).
DEVICE_MAY_IMPORT = {"bundle", "errors", "nm", "record", "vocab"}


def test_no_cycle_between_subpackages() -> None:
    assert cycles(graph()) == []


def test_cycles_are_found_when_there_are_some() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_device_side_imports_no_host_package() -> None:
    edges = graph()
    assert edges["device"] <= DEVICE_MAY_IMPORT, edges["device"] - DEVICE_MAY_IMPORT
    for unit in DEVICE_MAY_IMPORT - {"errors"}:
        assert edges.get(unit, set()) <= {"errors", "vocab"}, unit


BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'onnx', 'sklearn'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib
import edgeprune, edgeprune.bundle, edgeprune.device, edgeprune.nm, edgeprune.record, edgeprune.vocab
assert issubclass(edgeprune.EdgepruneError, Exception)
for mod in pkgutil.walk_packages(edgeprune.device.__path__, 'edgeprune.device.'):
    if mod.name.endswith('__main__'):
        continue
    importlib.import_module(mod.name)
print('ok')
"""


def test_device_side_imports_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
