"""Bad input through the real CLI (in-process ``main``): each is one line on stderr that names the
problem and the fix, with a non-zero exit and no traceback."""

from pathlib import Path

import pytest
from pytorch_lightning import Trainer

from conftest import CONFIGS, SIMCLR_CONFIG, TINY, TINY_DATA, TINY_HEADS, RandomImages
from test_data import write_image_folder
from ssl_lightning.cli import main
from ssl_lightning.methods import SimCLR


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of a SimCLR with TINY's architecture (width 8, heads 32/16)."""
    path = tmp_path_factory.mktemp("ckpt") / "simclr.ckpt"
    model = SimCLR(width=8, projection_hidden_dim=32, projection_dim=16, in_channels=1, image_size=16, mean=(0.5,), std=(0.29,))
    trainer = Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=RandomImages(batch_size=16, val_size=32))
    trainer.save_checkpoint(path)
    return path


def truncated(checkpoint: Path, tmp: Path) -> Path:
    path = tmp / "truncated.ckpt"
    data = checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def image_folder_with_a_broken_file(tmp: Path) -> Path:
    write_image_folder(tmp / "images", per_class=40)
    (tmp / "images" / "dog" / "7.png").write_bytes(b"\x89PNG not really")
    return tmp / "images"


FOLDER = ["--data.class_path=ImageFolderDataModule", "--data.init_args.image_size=16", "--data.init_args.val_size=8",
          "--data.init_args.batch_size=8"]
SIMCLR = ["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.fast_dev_run=true"]
CASES = {
    # case: (extra arguments, given tmp_path and the SimCLR checkpoint; what the line says)
    "missing checkpoint": (lambda t, c: ["--ckpt_path", str(t / "nowhere.ckpt")], "checkpoint not found"),
    "corrupt checkpoint": (lambda t, c: ["--ckpt_path", str(t / "x.ckpt")] if (t / "x.ckpt").write_bytes(b"junk") else [],
                           "corrupt, truncated or not a torch checkpoint"),
    "truncated checkpoint": (lambda t, c: ["--ckpt_path", str(truncated(c, t))], "corrupt, truncated"),
    "another method": (lambda t, c: ["--config", str(CONFIGS / "moco.yaml"), *TINY_DATA, *TINY_HEADS["moco"], "--ckpt_path", str(c)],
                       "written by SimCLR, not MoCo; use the SimCLR config"),
    "another architecture": (lambda t, c: ["--model.init_args.projection_dim=24", "--ckpt_path", str(c)],
                             "for another architecture (2 tensors differ: projector"),
    "queue not a multiple of the batch": (lambda t, c: ["--config", str(CONFIGS / "moco.yaml"), *TINY_DATA, *TINY_HEADS["moco"],
                                                        "--model.init_args.queue_size=40"], "must be a multiple of the batch size"),
    "label budget larger than the data": (lambda t, c: ["--data.init_args.labels_per_class=100"], "labels per class"),
    "unknown method": (lambda t, c: ["--model.class_path=SimCRL"], "unknown method 'SimCRL'; choose one of SimCLR, MoCo, BYOL"),
    "unknown backbone": (lambda t, c: ["--model.init_args.backbone=resnet99"], "unknown backbone 'resnet99'; choose one of"),
    "unwritable output": (lambda t, c: [f"--trainer.logger.init_args.save_dir={t / 'a_file' / 'runs'}"] if (t / "a_file").touch() is None else [],
                          "cannot write to the output folder"),
    "earlier checkpoints in the folder": (
        lambda t, c: [f"--checkpoint.dirpath={t}", "--trainer.fast_dev_run=false", "--trainer.max_steps=1"] if (t / "old.ckpt").touch() is None else [],
        "already holds checkpoints of an earlier run"),
    "a trainer setting Lightning refuses": (lambda t, c: ["--trainer.max_time=00:00:00:600"], "is not a valid duration"),
    "empty image folder": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={t}"], "has no class sub-folders"),
    "missing image folder": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={t / 'nowhere'}"], "image folder not found"),
    "unreadable image": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={image_folder_with_a_broken_file(t)}"],
                         "cannot read image"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(case, simclr_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra, expected = CASES[case]
    (tmp_path / "work").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([*SIMCLR, *extra(tmp_path / "work", simclr_checkpoint)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ssl-lightning: error: ") and expected in last, err[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--merge", "missing.csv"], "missing.csv not found; give --merge the gpu_check.csv that a run wrote"),
    (["--out", "out", "--data-dir", "."], "lacks Fashion-MNIST; give --data-dir a folder with its four *-ubyte.gz files"),
])
def test_gpu_check_input_errors_are_one_line(args, message, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
