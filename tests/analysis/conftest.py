"""Analysis tests: the host-CPU calibration is cached in a temporary folder, not in ~/.cache.

The folder lives for the session (one calibration run for all modules); the environment variable
pointing at it is set per module and restored afterwards, so tests elsewhere see no change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def analysis_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edgeprune-cache")


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(analysis_cache_dir: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEPRUNE_CACHE_DIR", str(analysis_cache_dir))
        yield
