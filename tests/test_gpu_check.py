"""scripts/gpu_check.py, the prepared GPU check: its dry run on the CPU (every step, tiny sizes), its
time boxes, the CUDA sync recorder, --merge into a copy of the speed page, and the wheel closure of
scripts/gpu_check.sh."""

import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


@pytest.fixture(scope="module")
def scripts():
    """The scripts folder importable, as it is for a script run from it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPTS))
        import cuda_syncs
        import gpu_check
        import wheel_closure

        yield SimpleNamespace(gpu_check=gpu_check, cuda_syncs=cuda_syncs, wheel_closure=wheel_closure)


@pytest.fixture(scope="session")  # once per pytest worker, however make test spreads the tests
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    result = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--dry-run", "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    return result, out


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_writes_the_report(dry_run):
    result, out = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out / "gpu_check.csv", dtype=str, keep_default_na=False)
    status = table.groupby(["step", "check"], sort=False)["status"].first()
    assert set(status) == {"ok", "skipped"} and {s for (s, _), v in status.items() if v == "ok"} == {"1", "2", "3", "4", "5"}
    metric = table.set_index(["step", "check", "metric"])["value"]
    for method in ("byol", "barlow_twins", "supervised"):  # trained by the GPU run only
        assert status["2", method] == "skipped"
    for method in ("simclr", "moco"):  # 3 steps, a checkpoint, 3 more
        assert status["2", method] == "ok"
        assert metric["2", method, "resumed from step"] == "3" and metric["2", method, "final step"] == "6"
        assert 0 < float(metric["2", method, "loss at step 6"]) < float("inf")
        assert metric["2", method, "channels-last"] == "True"
    for method in ("simclr", "moco"):
        assert metric["3", method, "steps watched"] == "6" and metric["3", method, "syncs"] == "0"
    assert float(metric["4", "simclr", "pipeline_images_per_s"]) > 0 and float(metric["4", "simclr", "fit_images_per_s"]) > 0
    assert float(metric["5", "simclr_gpu.yaml", "steps"]) == 3  # 96 images, batch 32, max_epochs 1
    assert 0 < float(metric["5", "simclr_gpu.yaml", "linear_probe_all_test_acc"]) <= 1
    report = (out / "gpu_check.md").read_text()
    for heading in ("## 1. Environment", "## 2. Every method trains", "## 3. Host syncs", "## 4. Throughput", "## 5. Time to accuracy"):
        assert heading in report
    assert "| simclr | " in report.split("## 4. Throughput")[1]  # the benchmark's table
    assert "all 96 training images of the fit" in report and "scored on the 200 test images" in report  # its own small Fashion-MNIST
    assert "What did not pass" not in report
    assert "===== 5. time to accuracy" in (out / "gpu_check.log").read_text()


@pytest.mark.slow
def test_merge_writes_the_results_into_the_speed_page_once(dry_run, scripts, tmp_path):
    _, out = dry_run
    page = tmp_path / "speed.md"
    original = (REPO / "docs" / "speed.md").read_text()
    page.write_text(original)
    result = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--merge", str(out / "gpu_check.csv"),
                             "--page", str(page)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scripts.gpu_check.merge(out / "gpu_check.csv", page)  # again: it replaces its block
    text = page.read_text()
    begin, end = text.index("<!-- gpu_check results: begin"), text.index("<!-- gpu_check results: end -->")
    assert text.count("<!-- gpu_check results: begin") == 1
    assert text.index("\n## The GPU check\n") < begin < end < text.index("\n## The GPU targets")
    block = text[begin:end]
    pipeline = pd.read_csv(out / "gpu_check.csv").query("metric == 'pipeline_images_per_s'")["value"].astype(float).iloc[0]
    assert f"| simclr | 32-true | {pipeline:.0f} |" in block
    assert "none (CPU" in block and "dry run on the CPU" in block  # says where it ran
    assert (text[:begin] + text[end + len("<!-- gpu_check results: end -->"):]).replace("\n", "") == original.replace("\n", "")


def test_a_failing_and_a_hanging_check_are_recorded_and_the_hang_is_ended(scripts, tmp_path):
    gpu_check = scripts.gpu_check
    ctx = gpu_check.Context(gpu_check.DRY_RUN, tmp_path, None, dry_run=True)

    def fails(ctx):
        ctx.record("before", 1)
        raise ValueError("the loss was nan")

    def hangs(ctx):
        ctx.record("pid", subprocess.Popen(["sleep", "60"]).pid)  # a process of its own, as the benchmark starts
        time.sleep(60)

    failed = gpu_check.run_boxed(gpu_check.Check(2, "fails", fails, 30, 0), ctx, seconds=30)
    assert failed.status == "failed" and failed.metrics == {"before": 1} and "ValueError: the loss was nan" in failed.note
    start = time.monotonic()
    hung = gpu_check.run_boxed(gpu_check.Check(2, "hangs", hangs, 2, 0), ctx, seconds=2)
    assert hung.status == "timed out" and time.monotonic() - start < 10
    stat = Path(f"/proc/{hung.metrics['pid']}/stat")
    for _ in range(50):  # the grandchild went with its group (gone, or a zombie until reaped)
        if not stat.exists() or stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_a_slow_check_cannot_take_the_time_that_the_later_checks_need(scripts, tmp_path, monkeypatch):
    gpu_check = scripts.gpu_check
    plan = [gpu_check.Check(1, "environment", lambda ctx: None, 30, 10), gpu_check.Check(4, "first", lambda ctx: None, 100, 5),
            gpu_check.Check(5, "second", lambda ctx: None, 100, 60), gpu_check.Check(4, "optional", lambda ctx: None, 100, 0, only_with=20)]
    clock, boxes = [0.0], []

    def uses_its_whole_box(check, ctx, seconds):
        boxes.append(round(seconds))
        clock[0] += seconds
        return gpu_check.Outcome(check, "timed out", seconds, {}, "")

    monkeypatch.setattr(gpu_check, "checks", lambda sizes: plan)
    monkeypatch.setattr(gpu_check, "run_boxed", uses_its_whole_box)
    monkeypatch.setattr(gpu_check, "write_outputs", lambda *args: None)
    monkeypatch.setattr(gpu_check, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    outcomes = gpu_check.run_all(SimpleNamespace(dry_run=True, work=tmp_path, data_dir=None, budget=100), started=-20.0)
    # 20 s went to the imports; of the 80 left, the second keeps the 60 it needs and the first its 5;
    # none is left for the optional one
    assert boxes == [15, 5, 60]
    assert [o.status for o in outcomes] == ["timed out", "timed out", "timed out", "skipped"]
    assert outcomes[-1].note == "0 s were left for it"


def test_the_throughput_tables_have_a_row_per_method_and_precision(scripts, monkeypatch):
    import benchmark
    import pandas as pd

    from ssl_lightning.cli import run_defaults

    row = {"device": "cpu", "batch_size": 256, "image_size": 28, "model_only_images_per_s": 100.0, "fit_images_per_s": 90.0,
           "peak_mem_mb": 2000.0, "peer_peak_mem_mb": 2500.0}
    table = pd.DataFrame([
        {**row, "method": "simclr", "precision": "32-true", "pipeline_images_per_s": 100.0, "peer_images_per_s": 80.0},
        {**row, "method": "simclr", "precision": "bf16-mixed", "pipeline_images_per_s": 150.0, "peer_images_per_s": 100.0},
        {**row, "method": "moco", "precision": "32-true", "pipeline_images_per_s": 120.0, "peer_images_per_s": float("nan")},
    ], columns=benchmark.CSV_COLUMNS)
    lines = benchmark.throughput_tables(table, workers=2)
    assert "| simclr | 32-true | 100 | 100 | 1.00 | 90 |" in "\n".join(lines) and any(line.startswith("| moco | 32-true |") for line in lines)
    assert "| 32-true | 100 | 80 | **1.25** | 2000 | 2500 |" in lines and "| bf16-mixed | 150 | 100 | **1.50** | 2000 | 2500 |" in lines
    monkeypatch.setattr(run_defaults, "cpu_bf16_instructions", lambda: ["AVX512-BF16"])
    assert benchmark.default_precisions("cpu") == ["32-true", "bf16-mixed"]  # the default and the fp32 it replaces
    monkeypatch.setattr(run_defaults, "cpu_bf16_instructions", lambda: [])
    assert benchmark.default_precisions("cpu") == ["32-true"]


def test_time_to_accuracy_epochs_come_from_the_simclr_throughput(scripts, tmp_path):
    gpu_check = scripts.gpu_check
    ctx = gpu_check.Context(gpu_check.GPU, tmp_path, None, dry_run=False)
    assert gpu_check.tta_epochs(ctx)[0] == 20  # nothing measured: a guess
    ctx.earlier[4, "simclr + lightly"] = {"method": "simclr", "fit_images_per_s": 10_000.0}
    epochs, why = gpu_check.tta_epochs(ctx)
    assert epochs == int(0.8 * 240 * 10_000 / 55_000) == 34 and "10000 images/s" in why
    ctx.earlier[4, "simclr + lightly"]["fit_images_per_s"] = 1e6
    assert gpu_check.tta_epochs(ctx)[0] == 100  # simclr_gpu.yaml's schedule at most


@pytest.mark.filterwarnings("ignore:called a synchronizing CUDA operation")  # the ones outside the window
def test_the_sync_watch_counts_syncs_with_their_line_in_its_window_only(scripts):
    watch = scripts.cuda_syncs.CudaSyncWatch(start=3, stop=9)
    module = SimpleNamespace(device=torch.device("cpu"))

    def sync():
        warnings.warn(scripts.cuda_syncs.SYNC_MESSAGE, UserWarning)  # what torch says in "warn" mode

    for step in range(10):
        watch.on_train_batch_start(SimpleNamespace(global_step=step), module, None, step)
        sync()
        if step == 5:
            with pytest.warns(UserWarning, match="another warning"):  # other warnings pass through
                warnings.warn("another warning", UserWarning)
    watch.teardown(None, module, "fit")
    assert watch.steps_watched == 6 and sum(watch.syncs.values()) == 6  # steps 3 to 8
    (place,) = watch.syncs
    assert place.startswith("tests/test_gpu_check.py:") and "(sync)" in place


def test_a_sync_names_the_ssl_lightning_frame_under_the_library_that_made_it(scripts):
    import traceback

    frame = lambda path, line, name: traceback.FrameSummary(str(path), line, name)  # noqa: E731
    stack = traceback.StackSummary.from_list([
        frame(REPO / "ssl_lightning/methods/base.py", 201, "_shared_step"),
        frame("/venv/lib/python3.12/site-packages/torchmetrics/metric.py", 88, "forward"),
        frame("/usr/lib/python3.12/warnings.py", 10, "_showwarnmsg"),
    ])
    assert scripts.cuda_syncs.sync_place(stack) == "torchmetrics/metric.py:88 (forward), from ssl_lightning/methods/base.py:201 (_shared_step)"


def fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    """A wheel holding only its METADATA, as pip download saves it."""
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{name}-{version}.dist-info/METADATA",
                       "\n".join([f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]))


def test_the_wheel_closure_finds_what_neither_the_wheels_nor_the_machine_have(scripts, tmp_path):
    closure = scripts.wheel_closure
    fake_wheel(tmp_path, "kornia", "0.9.0", ["kornia-rs>=0.2.0", "torch>=2.5.1", "pillow; extra == 'dev'"])
    fake_wheel(tmp_path, "jsonargparse", "4.53.0", ["PyYAML>=3.13", "docstring-parser>=0.17; extra == 'signatures'",
                                                    "typing-extensions>=4.12; python_version < '3.11' and extra == 'signatures'"])
    machine = {"torch": Version("2.11.0"), "pyyaml": None}
    roots = [Requirement("kornia>=0.7.3"), Requirement("jsonargparse[signatures]>=4.27,<5"), Requirement("torch>=2.4")]
    bad, met = closure.problems(roots, sorted(tmp_path.glob("*.whl")), machine)
    assert sorted(bad) == ["docstring-parser>=0.17; extra == \"signatures\" (for jsonargparse): neither a wheel here nor on the machine",
                           "kornia-rs>=0.2.0 (for kornia): neither a wheel here nor on the machine"]  # not pillow, not typing-extensions
    fake_wheel(tmp_path, "kornia_rs", "0.2.0", [])
    fake_wheel(tmp_path, "docstring_parser", "0.18.0", [])
    bad, met = closure.problems(roots, sorted(tmp_path.glob("*.whl")), machine)
    assert bad == [] and met["machine"] == ["torch"] and met["machine, version unknown"] == ["pyyaml"]
    bad, _ = closure.problems([Requirement("torch>=2.12")], [], machine)
    assert bad == ["torch>=2.12 (for pyproject.toml): the machine has 2.11.0"]
    fake_wheel(tmp_path, "kornia", "0.8.0", [])
    assert any("kornia: 2 wheels" in line for line in closure.problems(roots, sorted(tmp_path.glob("*.whl")), machine)[0])


def test_the_report_and_speed_page_show_what_only_a_gpu_run_has(scripts, tmp_path):
    """Outcomes shaped as on a GPU (lightly's pipeline, torch.compile, syncs with their places, a
    failure; the numbers are made up) through the report, the CSV and --merge."""
    gpu_check = scripts.gpu_check
    check = lambda step, name: gpu_check.Check(step, name, None, 0, 0)  # noqa: E731
    bench = {"precision": "bf16-mixed", "device": "cuda", "batch_size": 512, "image_size": 32, "pipeline_images_per_s": 9000.0, "model_only_images_per_s": 10000.0,
             "fit_images_per_s": 8800.0, "peak_mem_mb": 5000.0, "peer_images_per_s": float("nan"), "peer_peak_mem_mb": float("nan"),
             "command": "python scripts/benchmark.py training --device cuda --image-size 32 --workers 8 --methods simclr"}
    outcomes = [
        gpu_check.Outcome(check(1, "environment"), "ok", 3.0, {"run": "GPU run", "date": "2026-12-02", "gpu": "NVIDIA H200", "cuDNN": 91000.0,
                                                                "torch": "2.11.0", "CUDA": "13.0", "pytorch-lightning": "2.6.6", "kornia": "0.9.0"}, ""),
        gpu_check.Outcome(check(2, "simclr"), "ok", 12.0, {"precision": "bf16-mixed", "device": "cuda:0", "loss at step 15": 4.1,
                                                           "resumed from step": 15.0, "peak memory MB": 900.0}, ""),
        gpu_check.Outcome(check(2, "moco"), "failed", 5.0, {}, "RuntimeError: CUDA error: an illegal memory access"),
        gpu_check.Outcome(check(3, "simclr"), "ok", 8.0, {"watching": "torch.cuda.set_sync_debug_mode('warn')", "steps watched": 6.0,
                                                          "syncs": 6.0, "sync at torch/_tensor.py:1 (item), from ssl_lightning/x.py:2 (f)": 6.0}, ""),
        gpu_check.Outcome(check(4, "simclr + lightly"), "ok", 30.0, {**bench, "method": "simclr", "peer_images_per_s": 3000.0,
                                                                     "peer_peak_mem_mb": 6000.0}, ""),
        gpu_check.Outcome(check(4, "moco"), "ok", 20.0, {**bench, "method": "moco", "command": bench["command"].replace("simclr", "moco")}, ""),
        gpu_check.Outcome(check(5, "simclr_gpu.yaml"), "timed out", 330.0, {"max_epochs": 30.0}, "Epoch 12"),
        gpu_check.Outcome(check(4, "simclr, torch.compile"), "ok", 90.0, {**bench, "method": "simclr", "pipeline_images_per_s": 12000.0}, ""),
    ]
    args = SimpleNamespace(dry_run=False, out=tmp_path / "out", work=tmp_path, budget=525)
    gpu_check.write_outputs(outcomes, args, elapsed=500)
    report = (args.out / "gpu_check.md").read_text()
    assert "The report could not be written" not in report
    assert "| bf16-mixed | 9000 | 3000 | **3.00** |" in report and "SimCLR with `--compile`" in report
    assert "- torch/_tensor.py:1 (item), from ssl_lightning/x.py:2 (f): 6" in report
    assert "moco: failed" in report and "CUDA error: an illegal memory access" in report
    page = tmp_path / "speed.md"
    page.write_text("# Speed\n\nsome text\n\n## The GPU targets\n")
    gpu_check.merge(args.out / "gpu_check.csv", page)
    text = page.read_text()
    assert text.index("some text") < text.index("### Measured by the GPU check: NVIDIA H200, 2026-12-02") < text.index("## The GPU targets")
    assert "6 of 8 checks passed; not passed: moco (every method trains: failed), simclr_gpu.yaml (time to accuracy: timed out)" in text
    assert "| bf16-mixed | 9000 | 3000 | **3.00** |" in text and "SimCLR with `--compile`: pipeline 12000 img/s" in text
    assert "(torch.cuda.set_sync_debug_mode('warn')): simclr 6" in text and "cuDNN 91000" in text
