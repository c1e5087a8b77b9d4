"""perf/model_experiments.py: a variant trained for a few seeds on a (tiny) MovieLens directory writes every seed,
the mean and standard error over them, the seeds' ensemble and the item side information it used; --table
reads the JSONs back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perf import model_experiments


def _movielens(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = [f"{u},{(u * 3 + t * 7 + int(rng.integers(0, 3))) % 40 + 1},4.0,{1_000_000 + 60 * t}"
            for u in range(1, 81) for t in range(10 + int(rng.integers(0, 6)))]
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    genres = ["Drama", "Comedy|Drama", "War", "Animation|Children"]
    movies = [f"{m},Movie {m},{genres[m % 4]}" for m in range(1, 41)]
    (root / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(movies) + "\n")
    return root


@pytest.mark.slow  # trains models
def test_a_variant_reports_every_seed_their_mean_and_their_ensemble(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = _movielens(tmp_path)
    out = tmp_path / "genres.json"
    model_experiments.main(["--variant", "genres", "--seeds", "1,2", "--out", str(out), "--max-train-seconds",
                            "1", "--data", str(data)])
    doc = json.loads(out.read_text())
    assert [r["seed"] for r in doc["runs"]] == [1, 2]
    assert doc["item_features"]["categories"] == 5 and doc["config"]["item_features"] is True
    values = [r["blend"]["valid"]["ndcg@10"] for r in doc["runs"]]
    summary = doc["summary"]["blend_valid_ndcg@10"]
    assert summary["n"] == 2 and summary["mean"] == pytest.approx(np.mean(values))
    assert summary["sem"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(2))
    assert doc["ensemble"]["seeds"] == [1, 2] and 0.0 <= doc["ensemble"]["blend"]["valid"]["ndcg@10"] <= 1.0
    model_experiments.main(["--table", str(out)])
    table = capsys.readouterr().out
    assert table.count("| genres | ") == 2 and "| **genres** | mean ± se (n=2)" in table
    assert "| genres ensemble | 1,2 |" in table
