"""The private members of Lightning, jsonargparse and argparse that ssl-lightning relies on
(``ssl_lightning.lightning_internals.PRIVATE_MEMBERS``). When an upgrade renames or removes one,
this test names it, instead of an override that silently stops being called or an AttributeError
in the middle of a run. A second test checks that no other module touches them."""

import argparse
import importlib
import re

import pytest
from jsonargparse import ArgumentParser
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from conftest import REPO
from ssl_lightning.lightning_internals import PRIVATE_MEMBERS


def owner_of(owner: str, tmp_path):
    """The class named by a ``PRIVATE_MEMBERS`` row, or for an "instance" row one made as ssl-lightning makes it."""
    if owner == "pytorch_lightning.callbacks.ModelCheckpoint instance":
        return ModelCheckpoint(dirpath=tmp_path)
    if owner == "pytorch_lightning.loops._FitLoop instance":
        return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False).fit_loop
    if owner == "jsonargparse.ArgumentParser instance":
        return ArgumentParser()
    if owner == "jsonargparse action instance":
        parser = ArgumentParser()
        parser.add_argument("--x", type=int)
        return next(a for a in parser._actions if a.dest == "x")
    if owner == "argparse subcommands action instance":
        return argparse.ArgumentParser().add_subparsers()
    module, name = owner.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("owner", "name"), PRIVATE_MEMBERS, ids=[f"{o}.{n}" for o, n in PRIVATE_MEMBERS])
def test_private_member_still_exists(owner, name, tmp_path):
    assert hasattr(owner_of(owner, tmp_path), name), f"{owner}.{name} is gone from this version; ssl_lightning.lightning_internals relies on it"


def test_no_other_module_touches_the_private_members():
    pattern = re.compile("|".join(rf"\.{re.escape(name)}\b|\b{re.escape(name)}\(" for _, name in PRIVATE_MEMBERS))
    touching = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "ssl_lightning").rglob("*.py"))
                if path.name != "lightning_internals.py"
                for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not touching, f"private Lightning members used outside ssl_lightning/lightning_internals.py: {touching}"
