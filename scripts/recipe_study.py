"""The recipe study: trials of one method's shipped config with a setting or two changed, each
trained for the epochs that fit a common wall-clock budget, then probed with all the labels and
with 10 per class.

    python scripts/recipe_study.py benchmarks/recipe_study/simclr.yaml             # every trial not yet done
    python scripts/recipe_study.py benchmarks/recipe_study/simclr.yaml --only crop  # these trials (again)

A trials file (YAML) names the method's config, the budget in minutes, and the trials: each a
name, the setting it tries (the table's words), its epochs and its `ssl-lightning fit` arguments.
The rows go to <trials file stem>.csv beside it, written after every trial (so a stopped study
continues where it stopped), and the table to <stem>.md; runs go to --runs_dir (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

from benchmark import REPO, fit_and_probe, hardware

COLUMNS = {"setting": "setting", "epochs": "epochs", "fit_minutes": "minutes", "val_knn_acc": "online kNN (val)",
           "linear_probe_all_test_acc": "probe, all labels", "linear_probe_10_test_acc": "probe, 10/class",
           "knn_test_acc": "kNN, all labels"}


def run_trial(config: Path, trial: dict, runs: Path) -> dict:
    """One trial's row: its training minutes, the last online kNN accuracy and the probes."""
    folder = runs / trial["name"]
    shutil.rmtree(folder, ignore_errors=True)  # a trial run again starts afresh
    fit_args = [f"--trainer.max_epochs={trial['epochs']}", f"--trainer.logger.init_args.name={trial['name']}", *trial.get("args", [])]
    results, curve = fit_and_probe(config, fit_args, folder, budgets=("all", 10), seeds=3)
    return {"trial": trial["name"], "setting": trial["setting"], "args": " ".join(trial.get("args", [])), **results,
            "val_knn_acc": curve["val_knn_acc"].iloc[-1], "date": datetime.date.today().isoformat(), "hardware": hardware()}


def markdown(study: dict, rows: pd.DataFrame, command: str) -> str:
    table = rows.set_index("trial").reindex([t["name"] for t in study["trials"]]).dropna(subset=["setting"])
    table["setting"] = [next(t["setting"] for t in study["trials"] if t["name"] == name) for name in table.index]  # the file's words
    shown = table[list(COLUMNS)].rename(columns=COLUMNS)
    for column in ("online kNN (val)", "probe, all labels", "probe, 10/class", "kNN, all labels"):
        shown[column] = (100 * shown[column]).map("{:.1f} %".format)
    shown["minutes"] = shown["minutes"].map("{:.1f}".format)
    shown["epochs"] = shown["epochs"].map("{:.0f}".format)
    lines = [f"# Recipe study: {study['title']}", "",
             f"Base config `{study['config']}`; budget about {study['minutes']} minutes of training per trial "
             "(epochs chosen to fit it; minutes are the whole `ssl-lightning fit` process). The probe is the linear "
             "probe on frozen features, weight decay chosen on the 5,000 validation images, scored on the 10,000 "
             "test images; 10/class is the mean of 3 draws. Hardware and dates: "
             + "; ".join(sorted(set(table["hardware"]))) + ".", "",
             f"Command: `{command}`", "", "| trial | " + " | ".join(shown.columns) + " |", "|---|---|" + "---:|" * (len(shown.columns) - 1),
             *(f"| {name} | " + " | ".join(map(str, row)) + " |" for name, row in shown.iterrows()), "",
             "Each trial's `ssl-lightning fit` arguments:", "",
             *(f"- {name}: `{args}`" if args else f"- {name}: the base config" for name, args in table["args"].fillna("").items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trials", type=Path, help="the trials file (YAML)")
    parser.add_argument("--only", nargs="+", default=None, help="run these trials (by name), done or not")
    parser.add_argument("--runs_dir", type=Path, default=REPO / "checkpoints" / "recipe_study")
    args = parser.parse_args()
    if not args.trials.is_file():
        parser.error(f"no trials file {args.trials} (benchmarks/recipe_study/ has the studies so far)")
    study = yaml.safe_load(args.trials.read_text())
    names = [t["name"] for t in study["trials"]]
    if unknown := sorted(set(args.only or []) - set(names)):
        parser.error(f"no trial named {', '.join(unknown)} in {args.trials} (its trials: {', '.join(names)})")
    csv = args.trials.with_suffix(".csv")
    rows = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["trial"])
    trials = args.trials.resolve()
    command = f"python scripts/recipe_study.py {trials.relative_to(REPO) if trials.is_relative_to(REPO) else trials}"
    for trial in study["trials"]:
        if (trial["name"] in set(rows["trial"])) if args.only is None else (trial["name"] not in args.only):
            continue
        row = run_trial(REPO / study["config"], trial, args.runs_dir / args.trials.stem)
        rows = pd.concat([rows[rows["trial"] != trial["name"]], pd.DataFrame([row])], ignore_index=True)
        rows.to_csv(csv, index=False, float_format="%.6f")
        args.trials.with_suffix(".md").write_text(markdown(study, rows, command))
        print(f"recipe_study: {trial['name']}: probe {100 * row['linear_probe_all_test_acc']:.1f} % in {row['fit_minutes']:.1f} min", flush=True)
    if len(rows):  # also where nothing was left to run
        args.trials.with_suffix(".md").write_text(markdown(study, rows, command))


if __name__ == "__main__":
    sys.exit(main())
