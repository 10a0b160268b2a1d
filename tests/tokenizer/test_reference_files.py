"""The test data are the published Qwen3 files (hashes pinned in tests/assets/qwen3/published_file_hashes.json)."""

from __future__ import annotations

import hashlib
import json

import pytest

from checkpoints import ASSETS, real_tokenizer_dir

PUBLISHED = json.loads((ASSETS / "published_file_hashes.json").read_text())["Qwen/Qwen3-0.6B"]["files"]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tokenizer_json_is_the_published_one():
    assert _sha256(real_tokenizer_dir() / "tokenizer.json") == PUBLISHED["tokenizer.json"]["lfs_sha256"]


@pytest.mark.parametrize("name", ["config.json", "generation_config.json", "tokenizer_config.json"])
def test_reference_configs_are_the_published_ones(name):
    assert _sha256(ASSETS / name) == PUBLISHED[name]["sha256"]
