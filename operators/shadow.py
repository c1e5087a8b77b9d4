"""The shadow model, decided without Flink: it scores the same event from the same stored state after the user's
served list is out, never at the cost of a served list, and its agreement with the serving model is measured on
live traffic (:class:`operators.live_metrics.Agreement`)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from operators.live_metrics import Agreement
from operators.serving import LIST, Output, ServingCore

__all__ = ["ShadowScorer"]

log = logging.getLogger(__name__)


class ShadowScorer:
    """Holds the shadow core (``None``: no shadow) and its agreement with the serving model.

    Its new state is dropped: the shadow rebuilds from the window at each event, so a shadow costs a full-window
    inference, and the served state never depends on it. An exception in the shadow counts as an ``errors``
    count of the serving core and is logged; the served list is already out."""

    def __init__(self, k: int) -> None:
        self.core: ServingCore | None = None
        self.agreement = Agreement(k=k)

    @property
    def version(self) -> str | None:
        return self.core.version if self.core is not None else None

    def score(self, key: str, fields: Any, stored: bytes | None, now_ms: int, served: Output,  # noqa: ANN401
              counts: Counter) -> Output | None:
        """The shadow's list for the event ``fields`` (``(key, payload, partition, offset, source_ts)``) that
        the serving model answered with ``served``; None when there is no shadow, it made no list, or it failed."""
        if self.core is None:
            return None
        try:
            out = self.core.process(key, fields[1], fields[2], fields[3], fields[4], stored, now_ms)
            if out.kind != LIST:
                return None
            serving_doc, shadow_doc = json.loads(served.value), json.loads(out.value)
            self.agreement.observe(key, serving_doc.get("trigger_item_id", ""))
            self.agreement.lists(key, [i["item_id"] for i in serving_doc["items"]],
                                 [i["item_id"] for i in shadow_doc["items"]])
            return out
        except Exception as exc:  # noqa: BLE001 - the shadow never costs a served list
            counts["errors"] += 1
            log.error("shadow model failed on an event: %s", exc)
            return None

    def forget(self, key: str) -> None:
        """``forget_user``: the agreement's memory of the user goes."""
        self.agreement.forget(key)
