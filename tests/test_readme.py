"""README's Python blocks run as written, each in a fresh interpreter in an empty folder, so that
what a reader copies works (imports, data and names included)."""

import re
import subprocess
import sys

import pytest

from conftest import REPO

BLOCKS = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M)


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python block"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    result = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README's Python block {index + 1}:\n{BLOCKS[index]}\n{result.stderr[-3000:]}"
    assert not list(tmp_path.iterdir()), "a README block wrote into the working directory"
