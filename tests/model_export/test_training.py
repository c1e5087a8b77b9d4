import json

import numpy as np
import pytest
import torch

from model_export.export import ExportParityError, ExportSpec, check_served_parity, load_serving_head
from model_export.model import LRURec, SASRec, SASRecConfig
from model_export.train import TrainConfig, left_pad
from operators.bundle import load_bundle
from operators.errors import ConfigError


def test_training_beats_popularity(trained_bundle):
    metrics = json.loads((trained_bundle / "metrics.json").read_text())
    popular = metrics["baselines"]["popular"]["test"]
    assert metrics["protocol"] == "loo-5core"
    assert metrics["test"]["ndcg@10"] > 2 * popular["ndcg@10"]
    assert metrics["test"]["recall@10"] > popular["recall@10"]
    assert metrics["valid"]["ndcg@10"] > 0
    assert metrics["curve"] and metrics["best_epoch"] >= 1
    for split in ("valid", "test"):
        assert set(metrics[split]) == {f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in (5, 10, 20)}
    assert metrics["n_users"] > 100 and metrics["n_items"] > 100 and metrics["n_events"] > metrics["n_users"]
    cooc = metrics["baselines"]["cooccurrence"]
    assert cooc["config"]["window"] == 5 and cooc["test"]["ndcg@10"] > popular["ndcg@10"]
    # the blend weight is the validation argmax of its own curve (not merely one of the grid's values)
    curve = {float(b): v for b, v in metrics["blend"]["valid_ndcg@10_by_beta"].items()}
    assert len(curve) >= 2 and curve[metrics["blend"]["beta"]] == max(curve.values()), curve
    # The served model is chosen on validation and is at least as good there as its parts.
    assert metrics["valid"]["ndcg@10"] >= metrics["models"]["lru"]["valid"]["ndcg@10"] - 1e-9
    assert metrics["train_seconds"] > 0


def test_report_has_tables_and_a_plot(trained_bundle):
    report = (trained_bundle / "report.md").read_text()
    assert "| popular |" in report and "| co-occurrence |" in report and "served:" in report
    assert "![training curves](training_curve.png)" in report
    assert (trained_bundle / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifest_records_parity(trained_bundle):
    """The manifest says what export checked (batch sizes, the step path); the bound itself is re-measured on
    the loaded bundle by test_parity_check_reports_every_mismatch, not read back from what export wrote."""
    parity = load_bundle(trained_bundle).manifest["training"]["parity"]
    assert parity["batches"][:3] == [1, 7, 32]
    assert {"max_abs_diff", "max_state_diff"} <= set(parity["step"])


def test_left_pad_keeps_newest_items():
    out = left_pad([np.array([1, 2, 3, 4]), np.array([5])], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5]]


def test_parity_check_reports_every_mismatch(trained_bundle):
    bundle = load_bundle(trained_bundle)
    head = load_serving_head(bundle)
    model = head.model
    inputs = [left_pad([np.arange(1, 10)], bundle.max_seq_len), left_pad([np.arange(3, 8)] * 2, bundle.max_seq_len)]
    assert bundle.external_scoring  # a recurrent model: graphs + operators.scoring, checked as served
    assert check_served_parity(head, bundle, inputs, inputs[:1], ExportSpec())["max_abs_diff"] < 1e-3
    with torch.no_grad():
        model.item_emb.weight.mul_(1.5)  # the served table no longer matches the weights
    with pytest.raises(ExportParityError) as info:
        check_served_parity(head, bundle, inputs, inputs[:1], ExportSpec())
    assert len(info.value.mismatches) >= 2
    assert all(any(what in m for what in ("max |score diff|", "carry their scores", "state differs"))
               for m in info.value.mismatches)
    assert any("state differs" in m for m in info.value.mismatches)  # the step graph embeds the new weights


def test_model_is_causal_and_finite_on_padding():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=30, max_seq_len=6, hidden=8, n_blocks=2, dropout=0.0)).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6]])
    assert model(seq).shape == (1, 31)
    # Causality: the hidden state at position 3 must not change when a later item changes.
    changed = seq.clone()
    changed[0, 5] = 9
    torch.testing.assert_close(model.encode(seq)[:, :4], model.encode(changed)[:, :4])
    assert not torch.allclose(model.encode(seq)[:, 5], model.encode(changed)[:, 5])
    # Fully padded rows (cold start) give finite scores, never NaN.
    assert torch.isfinite(model(torch.zeros((2, 6), dtype=torch.long))).all()


def test_lru_step_by_step_equals_the_parallel_scan_and_ignores_left_padding():
    torch.manual_seed(0)
    model = LRURec(SASRecConfig(n_items=30, max_seq_len=8, hidden=8, n_blocks=2, dropout=0.0, arch="lru")).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 9, 2]])
    with torch.no_grad():
        state = torch.zeros((2, model.state_size))
        for t in range(seq.shape[1]):
            state, vec = model.step(state, seq[:, t])
        # one event at a time (serving) == all positions at once (training)
        torch.testing.assert_close(state, model.final_state(seq), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.logits(vec), model(seq), atol=1e-4, rtol=1e-4)
        # padding in front changes nothing, and an unknown item (0) leaves the state as it was
        longer = torch.cat([torch.zeros((2, 4), dtype=torch.long), seq], dim=1)
        torch.testing.assert_close(model.final_state(longer), model.final_state(seq), atol=1e-5, rtol=1e-5)
        same, _ = model.step(state, torch.zeros(2, dtype=torch.long))
        torch.testing.assert_close(same, state)
        assert torch.isfinite(model(torch.zeros((2, 8), dtype=torch.long))).all()


def test_lru_item_features_fold_into_the_item_table():
    """Item side information is an additive term of the item table: folded into it after training, the model
    scores the same and has exactly a plain LRU's parameters (what is exported and served is unchanged)."""
    torch.manual_seed(0)
    model = LRURec(SASRecConfig(n_items=30, max_seq_len=8, hidden=8, n_blocks=1, dropout=0.0, arch="lru")).eval()
    features = torch.rand(31, 4)
    model.set_item_features(features / features.sum(dim=1, keepdim=True))
    with torch.no_grad():
        model.side_emb.weight.normal_()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 9, 2]])
    with torch.no_grad():
        plain = LRURec(model.cfg).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("side_emb")})
        assert not torch.allclose(plain(seq), model(seq)), "the side information changes the scores"
        before = model(seq)
        model.fold_item_features()
        assert model.side_emb is None and set(model.state_dict()) == set(LRURec(model.cfg).state_dict())
        torch.testing.assert_close(model(seq), before, atol=1e-5, rtol=1e-5)
        assert model.item_emb.weight[0].abs().sum() == 0


def test_the_trained_bundle_learnt_from_the_catalog_and_serves_a_plain_item_table(trained_bundle):
    """The session's bundle was trained with the world's catalog (conftest): the manifest says so, and the
    exported graph is the plain LRU's (the side information folded away), checked for parity at export."""
    from tests.conftest import WORLD

    training = load_bundle(trained_bundle).manifest["training"]
    side = training["item_features"]
    assert side is not None and side["categories"] == WORLD.n_clusters
    assert training["config"]["item_features"] is True
    assert training["parity"]["max_abs_diff"] < 1e-3


def test_item_features_follow_the_catalog_rule_and_the_switch(tmp_path):
    """MovieLens data reads its own movies.csv; an event log only a given catalog; --no-item-features none."""
    import pandas as pd

    from model_export.data import build_sequences
    from model_export.pipeline import TrainJob, item_features

    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4,1\n1,20,4,2\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n10,A,Drama|War\n20,B,(no genres listed)\n')
    data = build_sequences(pd.DataFrame({"user_id": ["1", "1"], "item_id": ["10", "20"], "ts": [1, 2]}))
    rows, info = item_features(TrainJob(data=str(tmp_path), out="x", fmt="movielens"), data)
    assert info["categories"] == 2 and info["items_with_a_category"] == 1
    np.testing.assert_allclose(rows[data.item_vocab.index("10") + 1], [0.5, 0.5])
    assert not rows[0].any() and not rows[data.item_vocab.index("20") + 1].any()
    assert item_features(TrainJob(data=str(tmp_path), out="x", fmt="events"), data) == (None, None)
    off = TrainJob(data=str(tmp_path), out="x", fmt="movielens", train=TrainConfig(item_features=False))
    assert item_features(off, data) == (None, None)


@pytest.mark.slow
def test_label_smoothing_changes_what_is_learnt():
    import pandas as pd

    from model_export.data import build_sequences, loo_split
    from model_export.train import train_model

    rows = [(f"u{u}", f"i{(u + t) % 40}", t) for u in range(60) for t in range(10)]
    data = build_sequences(pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]))
    split = loo_split(data)
    losses = [train_model(data, split, TrainConfig(max_seq_len=8, hidden=16, max_epochs=15, patience=15, lr=1e-2,
                                                   progress=False, label_smoothing=ls)).curve[-1]["loss"]
              for ls in (0.0, 0.3)]
    # the next item is determined here: plain cross-entropy falls towards 0, a smoothed target keeps a floor
    assert losses[1] > losses[0] + 0.3, losses


def test_bad_train_config():
    with pytest.raises(ConfigError, match="train.label_smoothing=1.0: Input should be less than 1"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="train.dropout=1.0: Input should be less than 1"):
        TrainConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="train.max_seq_len=0: Input should be greater than or equal to 1"):
        TrainConfig(max_seq_len=0)
    with pytest.raises(ConfigError, match="train.arch='bert'"):
        TrainConfig(arch="bert")
    with pytest.raises(ConfigError, match="train.hiden=8: Extra inputs are not permitted"):
        TrainConfig(hiden=8)


def test_gru4rec_trains_and_exports_with_parity(tmp_path):
    from model_export.data import build_sequences, loo_split
    from model_export.export import export_bundle
    from model_export.train import train_model

    rng = np.random.default_rng(0)
    import pandas as pd

    rows = [(f"u{u}", f"i{(u + t) % 40}", t) for u in range(60) for t in range(8 + int(rng.integers(0, 5)))]
    data = build_sequences(pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]))
    split = loo_split(data)
    result = train_model(data, split, TrainConfig(arch="gru4rec", max_seq_len=8, hidden=16, max_epochs=3,
                                                 progress=False))
    assert result.model.__class__.__name__ == "GRU4Rec"
    samples = [left_pad(split.test_inputs[:b], 8) for b in (1, 5)]
    bundle = export_bundle(result.model, tmp_path / "gru", version="gru-test", item_vocab=data.item_vocab,
                           n_candidates=20, training={}, popular_items=[], sample_inputs=samples)
    assert bundle.manifest["model"]["arch"] == "gru4rec"
    assert bundle.manifest["training"]["parity"]["max_abs_diff"] < 1e-3


def test_several_seeds_report_mean_and_standard_error_and_export_the_best_on_validation(tmp_path):
    """``streamrec train`` trains every seed (three by default): metrics.json gives the mean and standard error
    over them on test and validation, the exported model is the seed best on validation, and the report names
    it with its configuration."""
    import pandas as pd

    from model_export.pipeline import TrainJob, run_training

    rng = np.random.default_rng(0)
    rows = [{"user_id": f"u{u}", "item_id": f"i{(u * 3 + t * 7 + int(rng.integers(0, 3))) % 50}",
             "ts": 1_767_225_600_000 + 1000 * t, "event_type": "view"}
            for u in range(80) for t in range(10 + int(rng.integers(0, 6)))]
    data = tmp_path / "log.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in pd.DataFrame(rows).to_dict("records")) + "\n")
    metrics = run_training(TrainJob(data=str(data), out=str(tmp_path / "b"), n_candidates=30, seeds=(1, 2, 3),
                                    betas=(0.0, 0.5),
                                    train=TrainConfig(max_seq_len=8, hidden=16, max_epochs=2, progress=False)))
    seeds = metrics["seeds"]
    assert [r["seed"] for r in seeds["runs"]] == [1, 2, 3]
    for split, summary in (("test", seeds["summary"]), ("valid", seeds["valid_summary"])):
        values = np.array([r[split]["ndcg@10"] for r in seeds["runs"]])
        s = summary["ndcg@10"]
        assert s["n"] == 3 and s["mean"] == pytest.approx(values.mean())
        assert s["sem"] == pytest.approx(values.std(ddof=1) / np.sqrt(3))
    best = max(seeds["runs"], key=lambda r: r["valid"]["ndcg@10"])
    assert seeds["exported"]["seed"] == best["seed"] and metrics["test"] == best["test"]
    assert seeds["exported"]["config"]["seed"] == best["seed"]
    assert load_bundle(tmp_path / "b").manifest["training"]["config"]["seed"] == best["seed"]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## Over 3 seeds" in report and f"**Exported** (the best seed on validation): seed {best['seed']}" in report
