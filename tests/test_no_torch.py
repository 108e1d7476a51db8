"""edgeprune.bundle and edgeprune.device import on a device with no torch."""

from __future__ import annotations

import subprocess
import sys

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'onnx', 'sklearn'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib
import edgeprune.bundle, edgeprune.device
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
