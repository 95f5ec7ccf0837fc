"""The documentation site builds without a warning (``mkdocs build --strict``: links and anchors
between pages, docstrings that match their signatures), and every public function and class of
the modules the API page documents has a docstring."""

import importlib
import os
import re
import subprocess
import sys
import textwrap

import griffe
import pytest

from conftest import REPO

API_PAGE = REPO / "docs" / "api.md"


def documented_modules(page_text: str, package: griffe.Module) -> list[griffe.Module]:
    """The modules of the objects that the page's ``::: path`` blocks render."""
    modules = {}
    for path in re.findall(r"^::: ([\w.]+)", page_text, re.M):
        obj = package[path.removeprefix(package.name + ".")] if path != package.name else package
        module = obj if obj.is_module else obj.module
        modules[module.path] = module
    return list(modules.values())


def public_members(obj: griffe.Object) -> list[griffe.Object]:
    """The functions and classes defined in ``obj`` (a module or class) whose names are public."""
    return [m for name, m in obj.members.items() if not name.startswith("_") and not m.is_alias and (m.is_function or m.is_class)]


def overrides(cls: griffe.Class, name: str) -> bool:
    """Whether the class's method ``name`` overrides one of a base class (a Lightning hook, say),
    whose docstring it keeps; the bases are often outside the package, so the class is imported."""
    live = getattr(importlib.import_module(cls.module.path), cls.name)
    return any(name in vars(base) for base in live.__mro__[1:])


def undocumented(module: griffe.Module) -> list[str]:
    """Public functions and classes of ``module`` without a docstring, and their classes' public
    methods without one that override nothing."""
    missing = []
    for obj in public_members(module):
        if not obj.docstring:
            missing.append(obj.path)
        if obj.is_class:
            missing += [m.path for m in public_members(obj) if m.is_function and not m.docstring and not overrides(obj, m.name)]
    return missing


def test_every_public_name_of_the_api_page_has_a_docstring():
    package = griffe.load("ssl_lightning", search_paths=[str(REPO)])
    modules = documented_modules(API_PAGE.read_text(), package)
    assert len(modules) > 10, [m.path for m in modules]
    missing = [path for module in modules for path in undocumented(module)]
    assert not missing, f"public names without a docstring: {missing}"


def test_the_check_finds_an_undocumented_function_and_method(tmp_path, monkeypatch):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "__init__.py").write_text("")
    (tmp_path / "toy" / "shapes.py").write_text(textwrap.dedent('''
        """Shapes."""

        def area(side):
            """The area of a square."""

        def perimeter(side):
            return 4 * side

        def _private():
            pass

        class Square(dict):
            """A square."""

            def keys(self):  # overrides dict.keys: its docstring stands
                pass

            def diagonal(self):
                pass
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    package = griffe.load("toy", search_paths=[str(tmp_path)])
    (module,) = documented_modules("# Toy\n\n::: toy.shapes.area\n", package)
    assert undocumented(module) == ["toy.shapes.perimeter", "toy.shapes.Square.diagonal"]


def test_docs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    site = tmp_path / "site"
    assert (site / "api" / "index.html").is_file()
    for page in site.rglob("*.html"):  # every picture is there, README's and results/' included
        for src in re.findall(r'<img [^>]*src="([^"]*)"', page.read_text()):
            assert src.startswith("https://") or (src and (page.parent / src).is_file()), f"{page.relative_to(site)}: image {src!r}"


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "docs").glob("*.md")))
def test_links_between_pages_are_relative_md_links(page):
    """So that GitHub and mkdocs both resolve them: ``other.md#anchor``, not ``/other/``."""
    links = re.findall(r"\]\(([^)\s]+)", (REPO / "docs" / page).read_text())
    site_style = [link for link in links if not link.startswith(("http://", "https://", "#")) and
                  not re.match(r"^[\w./-]+\.(md|png|svg|jpg)(#[\w-]*)?$", link)]
    assert not site_style, f"{page}: {site_style}"
