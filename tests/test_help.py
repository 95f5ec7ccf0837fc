"""``ssl-lightning SUBCOMMAND --help`` from the help cache: the stored text is the built one, is
rebuilt where what it depends on changed, needs no torch, and a broken cache folder costs only time."""

import os
import re
import subprocess
import sys

import pytest

import ssl_lightning.cli as cli
from ssl_lightning.cli import help_cache, help_topic, help_topics, main
from ssl_lightning.cli.help_cache import cache_folder  # the real one: conftest points the CLI's to a tmp folder

WARM = "from ssl_lightning.cli.help_cache import warm; warm()"


@pytest.fixture
def builds(tmp_path, monkeypatch):
    """The help cache in ``tmp_path / "cache"``; the list of the arguments of every help built
    (not read from the cache)."""
    monkeypatch.setattr(help_cache, "cache_folder", lambda: tmp_path / "cache")
    built, call = [], cli.call

    def counted_call(runner, args):
        built.append(args)
        call(runner, args)

    monkeypatch.setattr(cli, "call", counted_call)
    return built


def help_of(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_a_stored_help_is_the_built_one_and_answers_without_building(builds, tmp_path, capsys):
    built = help_of(["embed", "--help"], capsys)
    assert built.startswith("usage: ssl-lightning embed") and builds == [["--help"]]
    assert [path.read_text() for path in (tmp_path / "cache").rglob("embed-*.txt")] == [built]
    assert help_of(["embed", "-h"], capsys) == built
    assert help_of(["embed", "--help"], capsys) == built
    assert builds == [["--help"]]


def test_another_terminal_width_builds_anew(builds, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    narrow = help_of(["prepare", "--help"], capsys)
    monkeypatch.setenv("COLUMNS", "150")
    wide = help_of(["prepare", "--help"], capsys)
    assert len(builds) == 2 and wide != narrow
    assert len(wide.splitlines()) < len(narrow.splitlines())  # wrapped to the wider terminal


def test_a_touched_source_file_builds_anew(builds, tmp_path, monkeypatch, capsys):
    package = tmp_path / "package"
    (package / "configs").mkdir(parents=True)
    (package / "module.py").write_text("")
    (package / "configs" / "recipe.yaml").write_text("")
    monkeypatch.setattr(help_cache, "PACKAGE", package)
    help_of(["prepare", "--help"], capsys)
    help_of(["prepare", "--help"], capsys)
    assert len(builds) == 1
    for touched in ("module.py", "configs/recipe.yaml"):
        stat = (package / touched).stat()
        os.utime(package / touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        help_of(["prepare", "--help"], capsys)
    assert len(builds) == 3


@pytest.mark.parametrize("broken", ["under a file", "entry is a folder"])
def test_a_cache_that_cannot_be_used_still_prints_the_help(broken, tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    folder = tmp_path / "a_file" / "cache" if broken == "under a file" else tmp_path / "cache"
    monkeypatch.setattr(help_cache, "cache_folder", lambda: folder)
    if broken == "entry is a folder":
        help_cache.cache_entry(["prepare"]).mkdir(parents=True)
    for _ in range(2):
        assert help_of(["prepare", "--help"], capsys).startswith("usage: ssl-lightning prepare")


def test_a_build_that_fails_is_printed_and_not_stored(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(help_cache, "cache_folder", lambda: tmp_path / "cache")

    def failing_build():
        print("usage: something")
        sys.exit(2)

    with pytest.raises(SystemExit) as exit_info:
        help_cache.print_help(["fit"], build=failing_build)
    assert exit_info.value.code == 2
    assert capsys.readouterr().out == "usage: something\n"
    assert not list(tmp_path.rglob("*.txt"))


def test_storing_keeps_the_newest_fingerprints_folders(builds, tmp_path, capsys):
    for age in range(1, 6):  # five earlier fingerprints, the oldest 5 days old
        old = tmp_path / "cache" / f"earlier-{age}"
        old.mkdir(parents=True)
        os.utime(old, (os.path.getmtime(old) - age * 86400,) * 2)
    help_of(["prepare", "--help"], capsys)
    kept = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert kept == sorted([help_cache.fingerprint(), "earlier-1", "earlier-2", "earlier-3"])


@pytest.mark.parametrize("args, topic", [
    (["fit", "--help"], ["fit"]),
    (["evaluate", "-h"], ["evaluate"]),
    (["visualize", "views", "--help"], ["visualize", "views"]),
    (["fit", "--config", "simclr.yaml", "--help"], None),  # the help lists the config's values
    (["--config", "simclr.yaml", "--help"], None),
    (["embed", "model.ckpt", "--help"], None),
    (["visualize", "model.ckpt", "--help"], None),
    (["--help"], None),  # the list of subcommands, which needs no cache
    (["fit"], None),
])
def test_only_a_subcommand_and_help_alone_are_answered_from_the_cache(args, topic):
    assert help_topic(args) == topic


def test_the_topics_are_every_subcommand_and_those_of_visualize(capsys):
    listed = re.findall(r"^  (\w+)  +\S", help_of(["visualize", "--help"], capsys), re.M)
    assert listed == ["embeddings", "neighbours", "views"]
    assert [topic for topic in help_topics() if len(topic) == 1] == [[name] for name in cli.COMMANDS]
    assert [topic for topic in help_topics() if len(topic) == 2] == [["visualize", name] for name in listed]


def test_the_cache_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "ssl-lightning" / "help"
    for ignored in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert cache_folder() == tmp_path / "home" / ".cache" / "ssl-lightning" / "help"


# --- in fresh processes, as the console script runs: warm() (make install), then a --help --------

def python(code, cache, cwd):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    """A cache folder (``XDG_CACHE_HOME``) that ``warm()`` filled, in one process."""
    cache = tmp_path_factory.mktemp("warmed")
    python(WARM, cache, cwd=cache)
    return cache


def stored(cache):
    """{topic's file name: the help stored} of the one fingerprint in ``cache``."""
    (folder,) = (cache / "ssl-lightning" / "help").iterdir()
    return {path.name: path.read_text() for path in folder.iterdir()}


def entry_name(topic):
    return f"{'-'.join(topic)}-80.txt"


HELP_AND_MODULES = ("import sys\nfrom ssl_lightning.cli import main\n"
                    "try: main({args})\nexcept SystemExit as end: assert end.code == 0, end.code\n"
                    "print([name for name in ('torch', 'pytorch_lightning', 'jsonargparse') if name in sys.modules])")


def help_and_modules(topic, cache, cwd):
    """The help of ``topic`` printed by a fresh process, and the modules of torch, Lightning and
    jsonargparse that it imported."""
    text, modules = python(HELP_AND_MODULES.format(args=[*topic, "--help"]), cache, cwd).rsplit("\n", 2)[:2]
    return text + "\n", modules


@pytest.mark.slow
def test_warm_stores_the_help_of_every_topic(warmed):
    assert sorted(stored(warmed)) == sorted(map(entry_name, help_topics()))


@pytest.mark.slow
@pytest.mark.parametrize("topic", [["fit"], ["visualize", "neighbours"]], ids=" ".join)
def test_a_stored_help_prints_without_torch_lightning_or_jsonargparse(topic, warmed):
    text, modules = help_and_modules(topic, warmed, cwd=warmed)
    assert text == stored(warmed)[entry_name(topic)]
    assert modules == "[]"


@pytest.mark.slow
def test_warm_stores_what_a_fresh_process_builds(warmed, tmp_path):
    # visualize neighbours is built after every other subcommand with a class-typed option, whose
    # imports could have added classes to those its help lists
    topic = ["visualize", "neighbours"]
    text, modules = help_and_modules(topic, tmp_path, cwd=warmed)
    assert modules != "[]"  # built, not read from a cache
    assert text == stored(warmed)[entry_name(topic)]


def test_the_fingerprint_is_the_same_from_any_working_directory(tmp_path, monkeypatch):
    """``python -c`` puts the working directory on ``sys.path``; a source checkout there holds
    ``*.egg-info``. ``make install`` warms the cache from the checkout, the console script reads
    it from anywhere: both must find the same entries."""
    elsewhere = help_cache.fingerprint()
    (tmp_path / "ssl_lightning.egg-info").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    assert help_cache.fingerprint() == elsewhere
