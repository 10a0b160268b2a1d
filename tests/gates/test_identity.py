"""Which model decides, as the ledger records it: dummy weights are named by their seed (there are no files)."""

from __future__ import annotations

import json

from qwick.gates.identity import ModelIdentity


def test_dummy_weights_need_no_weight_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    identity = ModelIdentity.of_checkpoint("bench", tmp_path, load_format="dummy", seed=7)
    assert identity == ModelIdentity("bench", None, "dummy:7")


def test_a_weights_file_is_hashed(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    identity = ModelIdentity.of_checkpoint("m", tmp_path)
    assert len(identity.weights_sha256) == 64 and identity.weights_sha256 != "dummy:0"
