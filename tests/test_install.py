"""An installed wheel carries the shipped checkpoints: load_encoder(name) works in any working
directory, offline, and gives the same weights and features as the source tree."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import ssl_lightning.shipped as shipped
from conftest import REPO
from ssl_lightning import load_encoder, shipped_checkpoints

# Run with PYTHONPATH=<target> alone: the venv's editable install of the source tree must not answer.
INSTALLED_CHECK = """
import json, sys
from pathlib import Path
import torch
import ssl_lightning
from ssl_lightning.shipped import resolve, sha256

target, inputs, out = map(Path, sys.argv[1:])
assert Path(ssl_lightning.__file__).resolve().is_relative_to(target.resolve()), ssl_lightning.__file__
images = torch.load(inputs, weights_only=True)
result = {}
for name in ssl_lightning.shipped_checkpoints():
    with torch.no_grad():
        features = ssl_lightning.load_encoder(name)(images)
    result[name] = {"sha256": sha256(resolve(name)), "features": features.tolist()}
out.write_text(json.dumps(result))
"""


@pytest.mark.slow
def test_installed_wheel_loads_every_shipped_encoder_elsewhere(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves no build/ or egg-info in the repository
    shutil.copytree(REPO / "ssl_lightning", source / "ssl_lightning", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "wheel"), str(source)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("ssl_lightning-*.whl")
    target = tmp_path / "installed"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], check=True, capture_output=True)

    torch.manual_seed(0)
    images = torch.rand(4, 1, 28, 28)  # float in [0, 1], Fashion-MNIST's shape
    torch.save(images, tmp_path / "images.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", INSTALLED_CHECK, str(target), str(tmp_path / "images.pt"), str(tmp_path / "out.json")],
                            cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = json.loads((tmp_path / "out.json").read_text())

    assert sorted(installed) == shipped_checkpoints()
    for name, got in installed.items():
        assert got["sha256"] == shipped.sha256(shipped.resolve(name))
        with torch.no_grad():
            expected = load_encoder(name)(images)
        torch.testing.assert_close(torch.tensor(got["features"]), expected)
    assert not list(elsewhere.iterdir())  # loading wrote nothing into the working directory
