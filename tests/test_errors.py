"""Bad input through the real CLI (in-process ``main``): each is one line on stderr that names the
problem and the fix, with a non-zero exit and no traceback."""

import urllib.error
from pathlib import Path

import pytest
from pytorch_lightning import Trainer

from conftest import CONFIGS, SIMCLR_CONFIG, TINY, TINY_DATA, TINY_ENCODER, TINY_HEADS, RandomImages
from test_data import write_image_folder
from ssl_lightning.cli import main
from ssl_lightning.methods import SimCLR


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of a SimCLR with TINY's architecture (width 8, heads 32/16)."""
    path = tmp_path_factory.mktemp("ckpt") / "simclr.ckpt"
    model = SimCLR(encoder=TINY_ENCODER, projection_hidden_dim=32, projection_dim=16)
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


def folder_with(tmp: Path, broken: str | None) -> Path:
    """A flat folder of 40 JPEGs, one of them broken: "garbage" (no JPEG header) or "truncated"
    (a valid header, the data cut off), or none."""
    from PIL import Image

    folder = tmp / "photos"
    folder.mkdir()
    for n in range(40):
        Image.new("RGB", (24, 20), (n * 6, 100, 200 - n * 4)).save(folder / f"{n}.jpg", quality=95)
    if broken == "garbage":
        (folder / "7.jpg").write_bytes(b"not a jpeg at all")
    elif broken == "truncated":
        data = (folder / "7.jpg").read_bytes()
        (folder / "7.jpg").write_bytes(data[: len(data) // 2])
    return folder


def file_list_with_a_missing_file(tmp: Path) -> Path:
    folder_with(tmp, None)  # the photos the list names
    listing = tmp / "images.txt"
    listing.write_text("".join(f"photos/{n}.jpg\n" for n in range(40)) + "photos/gone.jpg\n")
    return listing


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
    "support set not a multiple of the batch": (lambda t, c: ["--config", str(CONFIGS / "nnclr.yaml"), *TINY_DATA, *TINY_HEADS["nnclr"],
                                                              "--model.init_args.support_size=40"], "NNCLR support_size (40) must be a multiple"),
    "a head width below 1": (lambda t, c: ["--config", str(CONFIGS / "vicreg.yaml"), *TINY_DATA, "--model.init_args.expander_dim=-1"],
                             "a head's widths and layer count must be >= 1"),
    "label budget larger than the data": (lambda t, c: ["--data.init_args.labels_per_class=100"], "labels per class"),
    "unknown method": (lambda t, c: ["--model.class_path=SimCRL"], "unknown method 'SimCRL'; choose one of SimCLR, MoCo, BYOL"),
    "unknown backbone": (lambda t, c: ["--model.init_args.encoder.backbone=resnet99"], "unknown backbone 'resnet99'; choose one of"),
    "unwritable output": (lambda t, c: [f"--trainer.logger.init_args.save_dir={t / 'a_file' / 'runs'}"] if (t / "a_file").touch() is None else [],
                          "a_file is a file, not a folder; choose another trainer.logger.init_args.save_dir"),
    "earlier checkpoints in the folder": (
        lambda t, c: [f"--checkpoint.dirpath={t}", "--trainer.fast_dev_run=false", "--trainer.max_steps=1"] if (t / "old.ckpt").touch() is None else [],
        "already holds checkpoints of an earlier run"),
    "a precision Lightning does not have": (lambda t, c: ["--trainer.precision=bogus"],
                                            ("--trainer.precision takes one of 64, 32, 16, ", ", got bogus")),
    "an optimizer there is not": (lambda t, c: ["--model.init_args.optimizer.name=adam"],
                                  "--model.init_args.optimizer.name takes one of adamw, sgd, lars, got adam"),
    "a trainer setting Lightning refuses": (lambda t, c: ["--trainer.max_time=00:00:00:600"], "is not a valid duration"),
    "empty image folder": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={t}"], "no images in"),
    "missing image folder": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={t / 'nowhere'}"], "image folder not found"),
    "unreadable image": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={image_folder_with_a_broken_file(t)}"],
                         "cannot read image"),
    "corrupt JPEG": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={folder_with(t, 'garbage')}"], "cannot read image"),
    "JPEG corrupt past its header, streamed": (
        lambda t, c: [*FOLDER, f"--data.init_args.data_dir={folder_with(t, 'truncated')}", "--data.init_args.in_memory=false",
                      "--data.init_args.num_workers=1"], "cannot read image"),
    "file list naming missing files": (
        lambda t, c: [*FOLDER, f"--data.init_args.file_list={file_list_with_a_missing_file(t)}"], "do not exist (first: "),
    "labels=folders on a flat folder": (
        lambda t, c: [*FOLDER, f"--data.init_args.data_dir={folder_with(t, None)}", "--data.init_args.labels=folders"],
        "set data.labels=none to pretrain without labels"),
    "image size not positive": (lambda t, c: [*FOLDER, f"--data.init_args.data_dir={folder_with(t, None)}",
                                              "--data.init_args.image_size=0"], "image_size must be a positive"),
    "memory budget below one batch": (
        lambda t, c: [*FOLDER, f"--data.init_args.data_dir={folder_with(t, None)}", "--data.init_args.memory_budget_gb=0.000001"],
        "cannot hold one batch"),
    "streaming a dataset read whole": (lambda t, c: ["--data.init_args.in_memory=false"], "always holds it in memory"),
    "a batch of 1 for a contrastive method": (lambda t, c: ["--data.init_args.batch_size=1"],
                                              "SimCLR needs batches of at least 2 images"),
    "digits val_size too large": (lambda t, c: ["--data.class_path=DigitsDataModule", "--data.init_args.val_size=1500"],
                                  "val_size must be below 1437 (1,797 images minus test_size=360), got 1500; lower val_size"),
    "missing shard folder": (lambda t, c: ["--data.class_path=ShardedDataModule", f"--data.init_args.input_dir={t / 'shards'}"],
                             "shards (metadata.json is missing); write one with ssl-lightning prepare --data_dir FOLDER --output_dir"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(case, simclr_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra, expected = CASES[case]
    expected = (expected,) if isinstance(expected, str) else expected  # every part in the line
    (tmp_path / "work").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([*SIMCLR, *extra(tmp_path / "work", simclr_checkpoint)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ssl-lightning: error: ") and all(part in last for part in expected), err[-2000:]


def non_empty_folder(tmp: Path) -> Path:
    (tmp / "shards").mkdir()
    (tmp / "shards" / "notes.txt").write_text("mine")
    return tmp / "shards"


PREPARE_CASES = {
    # case: (arguments after --data_dir, given tmp_path; what the line says)
    "image size not positive": (lambda t: ["--output_dir", str(t / "shards"), "--image_size", "0"],
                                "--image_size must be a positive number of pixels, got 0"),
    "output folder not empty": (lambda t: ["--output_dir", str(non_empty_folder(t)), "--image_size", "16"],
                                "shards already exists and is not empty; choose another --output_dir"),
    "val_size as large as the folder": (lambda t: ["--output_dir", str(t / "shards"), "--image_size", "16", "--val_size", "40"],
                                        "val_size must be between 1 and 39 (the train split's size), got 40"),
    "JPEG corrupt past its header": (lambda t: ["--output_dir", str(t / "shards"), "--image_size", "16", "--val_size", "4",
                                                "--num_workers", "2"], "cannot read image"),  # met in a litdata worker
}


@pytest.mark.parametrize("case", sorted(PREPARE_CASES))
def test_bad_prepare_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    extra, expected = PREPARE_CASES[case]
    photos = folder_with(tmp_path, "truncated" if case.startswith("JPEG") else None)
    args = ["prepare", "--data_dir", str(photos), *extra(tmp_path)]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ssl-lightning: error: ") and expected in last, err[-2000:]
    # no output folder, no temporary folder, nothing changed in an existing one
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


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


def test_stl10_offline_says_where_to_put_the_files(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.stl10.download_and_extract_archive", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*SIMCLR, "--data.class_path=STL10DataModule", f"--data.init_args.root={tmp_path / 'data'}"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("ssl-lightning: error: STL-10 is not in "), err[-2000:]
    assert f"extract it into {tmp_path / 'data'} (it holds the stl10_binary folder)" in last


def unlabelled_folder(tmp: Path) -> list[str]:
    """Data arguments of an ImageFolderDataModule without labels (a flat folder of 40 JPEGs)."""
    return [*FOLDER, f"--data.init_args.data_dir={folder_with(tmp, None)}", "--data.init_args.labels=none"]


def with_prefix(prefix: str, args: list[str]) -> list[str]:
    return [arg.replace("--data.", f"--{prefix}.", 1) for arg in args]


NO_LABELS = "needs labelled data, but ImageFolderDataModule(data_dir="
NEEDS_LABELS = {
    # case: (command line, given tmp_path and the SimCLR checkpoint; what the line says)
    "evaluate": (lambda t, c: ["evaluate", str(c), *unlabelled_folder(t), f"--output_dir={t / 'out'}"], f"evaluate {NO_LABELS}"),
    "transfer": (lambda t, c: ["transfer", "--sources", str(c), *unlabelled_folder(t), f"--output_dir={t / 'out'}",
                               f"--log_dir={t / 'out'}"], f"transfer {NO_LABELS}"),
    "supervised baseline": (lambda t, c: ["fit", "--config", str(CONFIGS / "supervised.yaml"), "--model.init_args.encoder.width=8",
                                          *unlabelled_folder(t), "--trainer.fast_dev_run=true"], f"the supervised baseline {NO_LABELS}"),
    "online evaluation's eval_data": (lambda t, c: [*SIMCLR, *with_prefix("online_eval.eval_data", unlabelled_folder(t))],
                                      f"online evaluation's eval_data {NO_LABELS}"),
    "visualize embeddings": (lambda t, c: ["visualize", "embeddings", str(c), *unlabelled_folder(t), f"--output_dir={t / 'out'}"],
                             f"visualize embeddings (it colours the points by class) {NO_LABELS}"),
}


@pytest.mark.parametrize("case", sorted(NEEDS_LABELS))
def test_what_needs_labels_says_so_in_one_line(case, simclr_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    command, expected = NEEDS_LABELS[case]
    with pytest.raises(SystemExit) as exit_info:
        main(command(tmp_path, simclr_checkpoint))
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("ssl-lightning: error: ") and expected in last, err[-2000:]
    assert "--data ...), e.g. an ImageFolderDataModule with one sub-folder per class" in last or "--online_eval.eval_data ...)" in last
    assert not [path for path in tmp_path.rglob("*") if path.is_file() and "photos" not in path.parts]  # nothing half-written


def under_a_file(tmp: Path) -> Path:
    (tmp / "a_file").touch()
    return tmp / "a_file" / "out"


def holding_results(tmp: Path) -> Path:
    (tmp / "earlier").mkdir()
    (tmp / "earlier" / "results.md").write_text("an earlier table")
    return tmp / "earlier"


OUTPUT_CASES = {
    # case: (command line, given tmp_path and the SimCLR checkpoint; what the line says)
    "evaluate output under a file": (lambda t, c: ["evaluate", str(c), f"--output_dir={under_a_file(t)}"],
                                     "a_file is a file, not a folder; choose another --output_dir"),
    "evaluate output holding results": (lambda t, c: ["evaluate", str(c), f"--output_dir={holding_results(t)}"],
                                        "earlier already holds results; choose another --output_dir"),
    "evaluate cache under a file": (lambda t, c: ["evaluate", str(c), f"--cache_dir={under_a_file(t)}"], "choose another --cache_dir"),
    "evaluate train_size 0": (lambda t, c: ["evaluate", str(c), "--train_size=0"], "--train_size must be >= 1"),
    "transfer output under a file": (lambda t, c: ["transfer", "--sources", str(c), f"--output_dir={under_a_file(t)}",
                                                   f"--log_dir={t / 'logs'}"], "a_file is a file, not a folder; choose another --output_dir"),
    "transfer log folder under a file": (lambda t, c: ["transfer", "--sources", str(c), f"--log_dir={under_a_file(t)}"],
                                         "choose another --log_dir"),
    "transfer a missing second source": (lambda t, c: ["transfer", "--sources", str(c), str(t / "nowhere.ckpt"),
                                                       f"--log_dir={t / 'logs'}"], "checkpoint not found"),
    "visualize output under a file": (lambda t, c: ["visualize", "neighbours", str(c), f"--output_dir={under_a_file(t)}"],
                                      "a_file is a file, not a folder; choose another --output_dir"),
    "visualize views output holding results": (
        lambda t, c: ["visualize", "views", "--config", str(SIMCLR_CONFIG), f"--output_dir={holding_results(t)}"],
        "earlier already holds results; choose another --output_dir"),
    "visualize no images": (lambda t, c: ["visualize", "embeddings", str(c), "--num_images=0"], "--num_images must be >= 2"),
    "visualize no neighbours": (lambda t, c: ["visualize", "neighbours", str(c), "--k=0"], "--k must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_output_and_count_errors_are_one_line_before_any_work(case, simclr_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    command = OUTPUT_CASES[case][0](tmp_path, simclr_checkpoint)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("ssl-lightning: error: ") and OUTPUT_CASES[case][1] in last, err[-2000:]
    assert sorted(tmp_path.rglob("*")) == before  # no results, logs or cache written


def existing(path: Path) -> str:
    path.write_text("mine")
    return str(path)


COMMAND_CASES = {
    # case: (command line, given tmp_path and the SimCLR checkpoint; exit code; what the line says)
    "misspelt subcommand": (lambda t, c: ["fitt"], 2, "unknown ssl-lightning subcommand 'fitt'; did you mean fit? (valid: fit, validate,"),
    "no subcommand": (lambda t, c: [], 2, None),
    "abbreviated trainer option": (lambda t, c: [*SIMCLR, "--trainer.max_step=1"], 2,
                                   "unknown option --trainer.max_step; did you mean --trainer.max_steps"),
    "misspelt evaluate option": (lambda t, c: ["evaluate", str(c), "--budget", "5"], 2, "unknown option --budget; did you mean --budgets"),
    "misspelt visualize command": (lambda t, c: ["visualize", "neighbors", str(c)], 2,
                                   "unknown ssl-lightning visualize subcommand 'neighbors'; did you mean neighbours?"),
    "abbreviated prepare option": (lambda t, c: ["prepare", "--data_d", str(t)], 2, "unknown option --data_d; did you mean --data_dir"),
    "a negative learning rate": (lambda t, c: [*SIMCLR, "--model.init_args.optimizer.lr=-1"], 1, "optimizer.lr must be > 0, got -1.0"),
    "a zero-width encoder": (lambda t, c: [*SIMCLR, "--model.init_args.encoder.width=0"], 1, "encoder.width must be >= 1, got 0"),
    "a shared option moved into its group": (lambda t, c: [*SIMCLR, "--model.init_args.width=8"], 2,
                                             "SimCLR has no option --model.init_args.width; did you mean --model.init_args.encoder.width?"),
    "a renamed optimizer option": (lambda t, c: [*SIMCLR, "--model.init_args.sgd_momentum=0.9"], 2,
                                   "did you mean --model.init_args.optimizer.momentum?"),
    "misspelt nested model option": (lambda t, c: [*SIMCLR, "--model.init_args.encoder.widht=8"], 2,
                                     "SimCLR has no option --model.init_args.encoder.widht; did you mean --model.init_args.encoder.width?"),
    "misspelt data option of the base class": (lambda t, c: [*SIMCLR, "--data.init_args.train_szie=8"], 2,
                                               "FashionMNISTDataModule has no option --data.init_args.train_szie; did you mean "
                                               "--data.init_args.train_size?"),
    "visualize --data is the data module, not its help": (
        lambda t, c: ["visualize", "neighbours", str(c), "--data", "ImageFolderDataModule", "--data.data_dir", str(t / "nowhere"),
                      "--data.image_size", "16"], 1, "image folder not found"),
    "embed onto an existing file": (lambda t, c: ["embed", str(c), "--output", existing(t / "features.pt")], 1,
                                    "features.pt already exists; choose another output file"),
    "predict onto an existing file": (
        lambda t, c: ["predict", "--config", str(SIMCLR_CONFIG), *TINY, "--features.path", existing(t / "features.pt")], 1,
        "features.pt already exists; choose another output file"),
}


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_bad_commands_and_options_are_one_line(case, simclr_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    command, code, expected = COMMAND_CASES[case]
    with pytest.raises(SystemExit) as exit_info:
        main(command(tmp_path, simclr_checkpoint))
    assert exit_info.value.code == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if expected is None:  # the list of subcommands, as for --help
        assert "checkpoints  the shipped pretrained checkpoints" in captured.out
        return
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("ssl-lightning: error: ") and expected in last, captured.err[-2000:]
    assert [p.name for p in tmp_path.rglob("*")] in ([], ["features.pt"])  # nothing written
    assert not (tmp_path / "features.pt").exists() or (tmp_path / "features.pt").read_text() == "mine"  # nor overwritten
