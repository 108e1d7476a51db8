"""The README's Python example runs as written, and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python section has a python code block"
    return match.group(1)


@pytest.mark.trains
def test_readme_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    try:
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert "MACs;" in capsys.readouterr().out
    result, sparse, again = namespace["result"], namespace["sparse"], namespace["again"]
    assert result.model.conv1.out_channels < 16 and result.accuracy is not None  # type: ignore[attr-defined]
    for path, mask in sparse.plan.masks.items():  # type: ignore[attr-defined]
        weight = dict(sparse.model.named_modules())[path].weight  # type: ignore[attr-defined]
        assert not weight[~mask].any(), f"{path}: a pruned weight moved during the user's loop"
    x = namespace["x"]
    torch.testing.assert_close(again(x[:4]), result.model.eval()(x[:4]))  # type: ignore[operator,attr-defined]
    assert (tmp_path / "runs" / "net-ch50" / "plan.json").is_file()
