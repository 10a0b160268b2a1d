"""`llm.get_tokenizer()` answers transformers' common calls as AutoTokenizer does on the real Qwen3 files."""

from __future__ import annotations

import pytest
import torch

TEXTS = ["Hello world", "<|im_start|>user\n你好 🙂<|im_end|>\n<think>\nhm\n</think>", ""]


@pytest.mark.parametrize("add", [True, False])
def test_encode_takes_add_special_tokens(tokenizer, hf_tokenizer, add):
    for text in TEXTS:
        assert tokenizer.encode(text, add_special_tokens=add) == hf_tokenizer.encode(text, add_special_tokens=add)


@pytest.mark.parametrize("skip", [True, False])
def test_decode_and_batch_decode(tokenizer, hf_tokenizer, skip):
    batch = [hf_tokenizer.encode(t) for t in TEXTS]
    for ids in batch:
        assert tokenizer.decode(ids, skip_special_tokens=skip) == hf_tokenizer.decode(ids, skip_special_tokens=skip)
        tensor = torch.tensor(ids, dtype=torch.long)
        assert tokenizer.decode(tensor, skip_special_tokens=skip) == hf_tokenizer.decode(tensor,
                                                                                          skip_special_tokens=skip)
    assert tokenizer.decode(151644) == hf_tokenizer.decode(151644)
    assert tokenizer.batch_decode(batch, skip_special_tokens=skip) == hf_tokenizer.batch_decode(
        batch, skip_special_tokens=skip)


def test_call_on_one_text_and_a_list(tokenizer, hf_tokenizer):
    one = tokenizer(TEXTS[1])
    assert dict(one) == dict(hf_tokenizer(TEXTS[1]))
    assert one.input_ids == one["input_ids"]
    assert dict(tokenizer(TEXTS)) == dict(hf_tokenizer(TEXTS))
    assert dict(tokenizer(TEXTS, padding=True)) == dict(hf_tokenizer(TEXTS, padding=True))
    ours, theirs = tokenizer(TEXTS, padding=True, return_tensors="pt"), hf_tokenizer(TEXTS, padding=True,
                                                                                     return_tensors="pt")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(tokenizer("hi", return_tensors="pt").input_ids, hf_tokenizer("hi", return_tensors="pt").input_ids)


def test_call_rejects_what_it_cannot_do(tokenizer):
    with pytest.raises(ValueError, match="padding='max_length' is not supported"):
        tokenizer(TEXTS, padding="max_length")
    with pytest.raises(ValueError, match="return_tensors='np' is not supported"):
        tokenizer("hi", return_tensors="np")


def test_token_id_conversions(tokenizer, hf_tokenizer):
    tokens = ["hi", "<|im_end|>", "<think>", "not-a-token-at-all"]
    assert tokenizer.convert_tokens_to_ids(tokens) == hf_tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == hf_tokenizer.convert_tokens_to_ids("<|im_start|>")
    ids = hf_tokenizer.encode(TEXTS[1])
    for skip in (True, False):
        assert tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=skip) == hf_tokenizer.convert_ids_to_tokens(
            ids, skip_special_tokens=skip)
    assert tokenizer.convert_ids_to_tokens(5) == hf_tokenizer.convert_ids_to_tokens(5)


def test_special_token_roles_and_sizes(tokenizer, hf_tokenizer):
    for name in ("eos_token", "eos_token_id", "pad_token", "pad_token_id", "bos_token", "bos_token_id",
                 "unk_token", "all_special_tokens", "all_special_ids"):
        assert getattr(tokenizer, name) == getattr(hf_tokenizer, name), name
    assert len(tokenizer) == len(hf_tokenizer)
    assert tokenizer.get_vocab() == hf_tokenizer.get_vocab()
    # documented difference (qwick.tokenizer.hf_api): qwick's vocab_size counts the added tokens
    assert tokenizer.vocab_size == len(hf_tokenizer) == hf_tokenizer.vocab_size + len(hf_tokenizer.added_tokens_decoder)


def test_llm_get_tokenizer_is_this_tokenizer(tiny_model_dir, hf_tokenizer):
    from qwick import LLM

    tok = LLM(tiny_model_dir, dtype="float32", load_format="dummy", max_model_len=64).get_tokenizer()
    assert tok("Hello world").input_ids == hf_tokenizer("Hello world").input_ids
    assert tok.decode(tok.encode("Hello", add_special_tokens=True), skip_special_tokens=True) == "Hello"
