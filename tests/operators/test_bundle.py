import json
import re
import shutil

import pytest

from operators.bundle import load_bundle
from operators.errors import BundleError


@pytest.fixture
def bundle_copy(trained_bundle, tmp_path):
    return shutil.copytree(trained_bundle, tmp_path / "b")


def edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key)
        else:
            manifest[key] = value
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_trained_bundle_verifies(trained_bundle):
    bundle = load_bundle(trained_bundle)
    manifest = bundle.manifest
    assert bundle.version.startswith("lru-")
    assert bundle.recurrent and bundle.step_path.is_file()
    trained = manifest["training"]["config"]
    assert trained["hidden"] == 32  # the fixture's; blocks are the default's: per block two hidden, plus one
    assert bundle.state_size == manifest["step"]["state_size"] == (2 * trained["n_blocks"] + 1) * 32
    assert bundle.max_seq_len == 20
    assert bundle.n_items == manifest["model"]["n_items"] > 100
    assert len(manifest["training"]["data_fingerprint"]) == 64
    assert manifest["training"]["metrics"]["test"]["ndcg@10"] > 0
    assert bundle.popular_items and set(bundle.popular_items) <= set(bundle.item_vocab)


def test_tampered_onnx_fails_with_sha256_message(bundle_copy):
    with (bundle_copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"sha256 of model\.onnx is [0-9a-f]{64} but the manifest says") as info:
        load_bundle(bundle_copy)
    assert "streamrec train" in str(info.value)


def test_tampered_step_graph_fails_with_sha256_message(bundle_copy):
    with (bundle_copy / "step.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"sha256 of step\.onnx is [0-9a-f]{64} but the manifest says"):
        load_bundle(bundle_copy)


def test_missing_step_graph(bundle_copy):
    (bundle_copy / "step.onnx").unlink()
    with pytest.raises(BundleError, match="step.onnx is missing"):
        load_bundle(bundle_copy)


def test_graph_with_unexpected_io_is_refused_at_load(bundle_copy):
    import shutil

    from operators.inference import OnnxModel

    shutil.copy(bundle_copy / "step.onnx", bundle_copy / "model.onnx")  # wrong graph in the right place
    bundle = load_bundle(bundle_copy, verify_checksum=False)
    with pytest.raises(BundleError, match=r"model.onnx has inputs=\['state', 'item', 'item_vec'\]"):
        OnnxModel(bundle, providers=["CPUExecutionProvider"])


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match=re.escape("directory does not exist")):
        load_bundle(tmp_path / "nope")


def test_missing_manifest(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(bundle_copy)


def test_missing_onnx(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is missing"):
        load_bundle(bundle_copy)


def test_unreadable_manifest(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{oops")
    with pytest.raises(BundleError, match="not readable JSON"):
        load_bundle(bundle_copy)


def test_unknown_format(bundle_copy):
    edit_manifest(bundle_copy, format="other/9")
    with pytest.raises(BundleError, match="unknown bundle format 'other/9'"):
        load_bundle(bundle_copy)


def test_incomplete_manifest_lists_every_problem(bundle_copy):
    edit_manifest(bundle_copy, version=None, item_vocab=None)
    with pytest.raises(BundleError, match="'version' missing or not a str; 'item_vocab' missing or not a list"):
        load_bundle(bundle_copy)


def test_vocabulary_size_mismatch(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    edit_manifest(bundle_copy, item_vocab=manifest["item_vocab"][:-1])
    with pytest.raises(BundleError, match="vocabulary has .* items but model.n_items is"):
        load_bundle(bundle_copy)


def test_duplicate_vocabulary(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    vocab = manifest["item_vocab"]
    edit_manifest(bundle_copy, item_vocab=[vocab[0], *vocab[:-1]])
    with pytest.raises(BundleError, match="duplicate item ids"):
        load_bundle(bundle_copy)
