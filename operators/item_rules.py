"""Item rules that change while the job runs: blocked items, unavailable items, and an optional allowlist.

Where they come from: a small JSON file (``--item-rules PATH``), re-read by every subtask when its modification
time changes (checked at most every ``check_every_s`` seconds, one ``stat`` call). Why a file and not a control
topic as broadcast state: in PyFlink's thread mode a broadcast input would be a second Python operator input
that every record of the main stream waits behind, and the rules must reach every subtask, which keyed routing
cannot do; a file on storage every TaskManager sees (a local path on the MiniCluster, a shared or object-store
mount on a cluster) reaches them all at the cost of a ``stat`` per second, and an update is one atomic rename::

    {"blocked": ["i13", "i99"], "unavailable": ["i7"], "allowed": null}

``allowed`` (a list) restricts recommendations to those items; ``null`` or absent allows every item. A file
that cannot be read or parsed keeps the previous rules in force and is logged (and counted), never fatal.

The same rules can also arrive on the job's control topic (``streamrec rules --bootstrap-servers ...``, a
message ``{"type": "item_rules", "blocked": [...], ...}`` read by every subtask as a broadcast input and kept in
broadcast state, so a restored job still has them): whichever changed last, file or message, is in force.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.errors import ConfigError

__all__ = ["ItemRules", "ItemRulesWatcher", "load_item_rules", "parse_item_rules", "CONTROL_ITEM_RULES"]

CONTROL_ITEM_RULES = "item_rules"
"""``type`` of an item-rules message on the control topic."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemRules:
    """A parsed rules file."""

    blocked: frozenset[str] = frozenset()
    unavailable: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None

    def mask(self, vocab: Sequence[str]) -> np.ndarray:
        """``bool [V + 1]`` by catalog index (0 = padding, False): whether the item may be recommended."""
        ok = np.ones(len(vocab) + 1, dtype=bool)
        ok[0] = False
        banned = self.blocked | self.unavailable
        for i, item in enumerate(vocab, start=1):
            if item in banned or (self.allowed is not None and item not in self.allowed):
                ok[i] = False
        return ok


def load_item_rules(path: str | Path) -> ItemRules:
    """Parse a rules file; raises :class:`ConfigError` saying what is wrong."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"item rules {path}: cannot read it as JSON ({exc})"
        raise ConfigError(msg) from None
    return parse_item_rules(doc, str(path))


def parse_item_rules(doc: object, path: str) -> ItemRules:
    """Rules from a parsed document (``path`` names where it came from in errors)."""
    if not isinstance(doc, dict) or set(doc) - {"blocked", "unavailable", "allowed"}:
        msg = (f"item rules {path}: expected an object with 'blocked', 'unavailable' (lists of item ids) and "
               f"'allowed' (a list or null), got {str(doc)[:120]}")
        raise ConfigError(msg)

    def ids(key: str) -> frozenset[str] | None:
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            msg = f"item rules {path}: '{key}' must be a list of item ids"
            raise ConfigError(msg)
        return frozenset(str(v) for v in value)

    return ItemRules(ids("blocked") or frozenset(), ids("unavailable") or frozenset(), ids("allowed"))


class ItemRulesWatcher:
    """The current rules as a catalog mask, re-read when the file changes (or appears)."""

    def __init__(self, path: str | Path | None, vocab: Sequence[str], *, check_every_s: float = 1.0,
                 clock=time.monotonic) -> None:  # noqa: ANN001 - injectable clock
        self.path = Path(path) if path else None
        self.vocab = vocab
        self.check_every_s = check_every_s
        self.clock = clock
        self.version = 0
        self.errors = 0
        self._mtime: int | None = None
        self._next_check = 0.0
        self.rules = ItemRules()
        self.mask: np.ndarray | None = None  # None: no rules, every item allowed
        if self.path is not None:
            self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (at most every ``check_every_s``); True when new rules took effect."""
        if self.path is None:
            return False
        now = self.clock()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self.check_every_s
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime and not force:
            return False
        self._mtime = mtime
        if mtime is None:
            rules = ItemRules()
        else:
            try:
                rules = load_item_rules(self.path)
            except ConfigError as exc:
                self.errors += 1
                log.error("%s; keeping the previous rules", exc)
                return False
        self._set(rules, str(self.path))
        return True

    def apply_message(self, message: dict) -> None:
        """Rules from a control-topic message (``type`` item_rules); a bad one raises ConfigError (the caller
        logs it and keeps the rules in force)."""
        doc = {k: v for k, v in message.items() if k != "type"}
        self._set(parse_item_rules(doc, "control message"), "control topic")

    def _set(self, rules: ItemRules, source: str) -> None:
        self.rules = rules
        self.mask = None if rules == ItemRules() else rules.mask(self.vocab)
        self.version += 1
        log.info("item rules loaded", extra={"fields": {"source": source, "version": self.version,
                                                        "blocked": len(rules.blocked),
                                                        "unavailable": len(rules.unavailable),
                                                        "allowed": None if rules.allowed is None
                                                        else len(rules.allowed)}})
