"""Shadow scoring decisions (operators/shadow.py) with stand-in cores: what reaches the shadow topic, what the
agreement measures, and that a failing shadow never costs the served list."""

from __future__ import annotations

import json

from operators.serving import DEAD_LETTER, LIST, Output
from operators.shadow import ShadowScorer


def _list(key: str, items: list[str], trigger: str = "") -> Output:
    doc = {"user_id": key, "trigger_item_id": trigger, "items": [{"item_id": i} for i in items]}
    return Output(state=b"s", kind=LIST, key=key, value=json.dumps(doc).encode())


class Core:
    version = "shadow-v2"

    def __init__(self, items: list[str] | Exception, kind: int = LIST) -> None:
        self.items, self.kind, self.calls = items, kind, []

    def process(self, key, payload, partition, offset, source_ts, stored, now_ms):  # noqa: ANN001, ANN201
        self.calls.append((key, payload, stored))
        if isinstance(self.items, Exception):
            raise self.items
        if self.kind != LIST:
            return Output(state=None, kind=self.kind, key=key, value=b"{}")
        return _list(key, self.items)


EVENT = ("u", b'{"item_id": "i9"}', 0, 7, 1)


def test_no_shadow_scores_nothing():
    scorer, counts = ShadowScorer(k=3), {"errors": 0}
    assert scorer.version is None
    assert scorer.score("u", EVENT, b"stored", 1, _list("u", ["a"]), counts) is None


def test_the_shadow_scores_the_same_event_from_the_same_state_and_measures_agreement():
    scorer, counts = ShadowScorer(k=3), {"errors": 0}
    scorer.core = core = Core(["a", "x", "y"])
    out = scorer.score("u", EVENT, b"stored", 1, _list("u", ["a", "b", "c"]), counts)
    assert out is not None and json.loads(out.value)["items"][0]["item_id"] == "a"
    assert core.calls == [("u", EVENT[1], b"stored")]
    assert scorer.agreement.compared == 1 and abs(scorer.agreement.overlap - 1 / 3) < 1e-9
    # the next event (item "b") is judged against each model's last list: serving had it, the shadow not
    scorer.score("u", EVENT, b"stored", 2, _list("u", ["a", "b", "c"], trigger="b"), counts)
    assert (scorer.agreement.judged, scorer.agreement.serving_hits, scorer.agreement.shadow_hits) == (1, 1, 0)
    scorer.forget("u")
    assert not scorer.agreement.last


def test_a_failing_or_listless_shadow_costs_nothing_but_a_count():
    scorer, counts = ShadowScorer(k=3), {"errors": 0}
    scorer.core = Core(RuntimeError("broken graph"))
    assert scorer.score("u", EVENT, None, 1, _list("u", ["a"]), counts) is None
    assert counts["errors"] == 1
    scorer.core = Core(["a"], kind=DEAD_LETTER)
    assert scorer.score("u", EVENT, None, 1, _list("u", ["a"]), counts) is None
    assert counts["errors"] == 1 and scorer.agreement.compared == 0
