"""Loading a tokenizer folder: sizes, special-token roles, where the chat template comes from, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qwick.tokenizer import Tokenizer

ASSETS = Path(__file__).parents[1] / "assets" / "qwen3"


@pytest.fixture
def folder_copy(tokenizer_dir: Path, tmp_path: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, tmp_path / name)
    return tmp_path


def test_vocab_size_counts_regular_and_added_tokens(tokenizer, hf_tokenizer):
    assert tokenizer.vocab_size == 151669 == len(hf_tokenizer) == len(tokenizer)


def test_special_token_roles(tokenizer):
    assert tokenizer.eos_token_id == 151645  # <|im_end|>
    assert tokenizer.pad_token_id == 151643  # <|endoftext|>
    assert tokenizer.special_tokens_map == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def test_special_token_ids_are_the_added_tokens_marked_special(tokenizer, hf_tokenizer):
    assert tokenizer.special_token_ids == frozenset(range(151643, 151657))
    assert tokenizer.special_token_ids == {i for i, t in hf_tokenizer.added_tokens_decoder.items() if t.special}


def test_think_tags_have_ids_but_are_not_special(tokenizer):
    assert (tokenizer.think_start_id, tokenizer.think_end_id) == (151667, 151668)
    assert not {151667, 151668} & tokenizer.special_token_ids


def test_chat_template_comes_from_tokenizer_config(tokenizer):
    assert tokenizer.chat_template == (ASSETS / "chat_template.jinja").read_text(encoding="utf-8")


def test_chat_template_file_beside_the_config_wins(folder_copy):
    old = (ASSETS / "chat_template.2025-04-original.jinja").read_text(encoding="utf-8")
    (folder_copy / "chat_template.jinja").write_text(old, encoding="utf-8")
    assert Tokenizer.from_pretrained(folder_copy).chat_template == old


def test_missing_tokenizer_config_still_loads_without_roles_or_template(folder_copy):
    (folder_copy / "tokenizer_config.json").unlink()
    tokenizer = Tokenizer.from_pretrained(str(folder_copy))
    assert tokenizer.encode("Hello world") == [9707, 1879]
    assert (tokenizer.eos_token_id, tokenizer.chat_template) == (None, None)


def test_apply_chat_template_without_a_template_says_how_to_fix(folder_copy):
    config = json.loads((folder_copy / "tokenizer_config.json").read_text(encoding="utf-8"))
    del config["chat_template"]
    (folder_copy / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer.from_pretrained(folder_copy).apply_chat_template([{"role": "user", "content": "Hi"}])


def test_role_tokens_written_as_added_token_dicts_are_read(folder_copy):
    config = json.loads((folder_copy / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["eos_token"] = {"content": "<|im_end|>", "special": True}
    (folder_copy / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert Tokenizer.from_pretrained(folder_copy).eos_token_id == 151645


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=r"no-such-model.*does not exist"):
        Tokenizer.from_pretrained(missing)


def test_missing_tokenizer_json_names_the_file_and_folder(folder_copy):
    (folder_copy / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError) as error:
        Tokenizer.from_pretrained(folder_copy)
    assert "tokenizer.json" in str(error.value) and str(folder_copy) in str(error.value)
