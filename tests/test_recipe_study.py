"""scripts/recipe_study.py: which trials run, what a stopped study keeps, and the table it writes
(the training and probing it calls, benchmark.fit_and_probe, is tested end to end in test_cli)."""

import sys

import pandas as pd
import pytest
import yaml

from conftest import REPO

TRIALS = {"title": "SimCLR here", "config": "ssl_lightning/configs/simclr.yaml", "minutes": 9, "trials": [
    {"name": "base", "setting": "the config", "epochs": 8},
    {"name": "wide", "setting": "width 32", "epochs": 4, "args": ["--model.init_args.encoder.width=32"]},
]}


@pytest.fixture
def study(tmp_path, monkeypatch):
    """The script's main with fit_and_probe replaced by a record of its calls (probe 0.8 + 0.01 a call)."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import recipe_study

    calls = []

    def fit_and_probe(config, fit_args, runs, budgets, seeds):
        calls.append(fit_args)
        curve = pd.DataFrame({"val_knn_acc": [0.5, 0.7]})
        accuracy = 0.8 + 0.01 * len(calls)
        return {"fit_minutes": 8.5, "epochs": float(fit_args[0].split("=")[1]), "linear_probe_all_test_acc": accuracy,
                "linear_probe_10_test_acc": accuracy - 0.1, "knn_test_acc": accuracy - 0.05}, curve

    monkeypatch.setattr(recipe_study, "fit_and_probe", fit_and_probe)
    trials = tmp_path / "simclr.yaml"
    trials.write_text(yaml.safe_dump(TRIALS))

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["recipe_study.py", str(trials), "--runs_dir", str(tmp_path / "runs"), *args])
        recipe_study.main()
        return calls

    return run, trials


def test_each_trial_runs_once_and_the_table_has_a_row_each(study):
    run, trials = study
    calls = run()
    assert [c[0] for c in calls] == ["--trainer.max_epochs=8", "--trainer.max_epochs=4"]
    assert "--model.init_args.encoder.width=32" in calls[1]
    run()  # a second call finds both done
    assert len(calls) == 2
    table = trials.with_suffix(".md").read_text()
    assert "| base | the config | 8 | 8.5 | 70.0 % | 81.0 % | 71.0 % | 76.0 % |" in table
    assert "| wide | width 32 | 4 | 8.5 | 70.0 % | 82.0 % | 72.0 % | 77.0 % |" in table
    assert "- wide: `--model.init_args.encoder.width=32`" in table and "- base: the base config" in table


def test_only_runs_a_trial_again_and_replaces_its_row(study):
    run, trials = study
    run()
    run("--only", "base")
    rows = pd.read_csv(trials.with_suffix(".csv"))
    assert sorted(rows["trial"]) == ["base", "wide"] and rows.set_index("trial").loc["base", "linear_probe_all_test_acc"] == 0.83


def test_an_unknown_trial_is_one_line(study, capsys):
    run, _ = study
    with pytest.raises(SystemExit):
        run("--only", "bsae")
    assert "no trial named bsae" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_missing_trials_file_is_one_line(study, capsys):
    run, trials = study
    trials.unlink()
    with pytest.raises(SystemExit):
        run()
    assert f"no trials file {trials}" in capsys.readouterr().err.strip().splitlines()[-1]
