"""MkDocs hooks: the configuration reference is generated from the models when the site is built (the text
``streamrec config --print-defaults`` prints), so it cannot drift from the code; the benchmarks' plots are
served from where the benchmarks write them (``perf/results/``), as ``results/<path>``."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "perf" / "results"

PLACEHOLDER = "{{ streamrec_config_defaults }}"


def config_defaults() -> str:
    from deploy.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["config", "--print-defaults"])
    if code != 0:
        msg = f"`streamrec config --print-defaults` exited {code}"
        raise RuntimeError(msg)
    return out.getvalue().rstrip("\n")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001, ARG001 - MkDocs' hook signature
    if PLACEHOLDER in markdown:
        return markdown.replace(PLACEHOLDER, config_defaults())
    return markdown


def on_files(files, config):  # noqa: ANN001, ANN201 - MkDocs' hook signature
    from mkdocs.structure.files import File

    for png in sorted(RESULTS.rglob("*.png")):
        rel = png.relative_to(RESULTS.parent).as_posix()  # results/...
        files.append(File(rel, src_dir=str(RESULTS.parent), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
