"""mkdocs hook (mkdocs.yml `hooks:`): README.md is the site's front page, and pages may show
repository files that live outside docs/ (results/'s plots), so that each has one source.

README's links point into docs/ from the repository root, as GitHub reads them; on the site the
front page is docs/index.md, so `docs/` is dropped from its relative links. A page in docs/ links
a repository file as `../path`; the file is published at `path` and the link follows.
"""

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

REPO = Path(__file__).resolve().parents[1]
INTO_DOCS = re.compile(r"\]\(docs/")
OUT_OF_DOCS = re.compile(r"\]\(\.\./([^)#\s]+)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "index.md", content=INTO_DOCS.sub("](", (REPO / "README.md").read_text())))
    for page in Path(config.docs_dir).glob("*.md"):
        for path in OUT_OF_DOCS.findall(page.read_text()):
            # A missing file is left to mkdocs, which reports the broken link.
            if (REPO / path).is_file() and files.get_file_from_path(path) is None:
                files.append(File.generated(config, path, abs_src_path=str(REPO / path)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return OUT_OF_DOCS.sub(r"](\1", markdown)
