"""MkDocs hook: the configuration reference is generated from the models when the site is built (the text
``streamrec config --print-defaults`` prints), so it cannot drift from the code."""

from __future__ import annotations

import contextlib
import io

PLACEHOLDER = "{{ streamrec_config_defaults }}"


def config_defaults() -> str:
    from flink_jobs.cli import main

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
