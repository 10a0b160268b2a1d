"""The incremental detokenizer's deltas join to exactly `decode(all_ids)` and never split a character."""

from __future__ import annotations

import random

import pytest

from qwick.tokenizer import IncrementalDetokenizer

TEXTS = {
    "chinese": "机器学习是人工智能的一个分支。你好，世界！",
    "japanese_korean": "吾輩は猫である。안녕하세요, 세계!",
    "emoji": "emoji 😀👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸 ❤️‍🔥 done",
    "mixed": "Hello 世界 مرحبا 🌍 Привет नमस्ते สวัสดี Größe 123,456.78",
    "code": 'def f(x):\n\treturn {"k": x**2}  # 平方 ✓\n',
    "chat": "<|im_start|>assistant\n<think>\n想一想\n</think>\n\n答案是 42 🎉<|im_end|>",
}


def byte_token_ids(tokenizer, data: bytes) -> list[int]:
    """One single-byte token per byte (GPT-2's byte-to-unicode table), as a model may sample them."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in table)})
    return [tokenizer.token_to_id(table[b]) for b in data]


def stream(tokenizer, ids: list[int], skip_special_tokens: bool, rng: random.Random | None = None) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
    deltas, i = [], 0
    while i < len(ids):
        step = rng.randint(1, 4) if rng else 1
        deltas.append(detok.add(ids[i:i + step]))
        i += step
    deltas.append(detok.finish())
    assert detok.text == "".join(deltas)
    return deltas


@pytest.mark.parametrize("skip_special_tokens", [True, False])
@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_token_by_token_deltas_join_to_decode(tokenizer, text, skip_special_tokens):
    ids = tokenizer.encode(text)
    deltas = stream(tokenizer, ids, skip_special_tokens)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_no_delta_holds_a_replacement_character(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all("\ufffd" not in delta for delta in stream(tokenizer, ids, True))


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_byte_tokens_emit_each_character_only_when_complete(tokenizer, text):
    ids = byte_token_ids(tokenizer, text.encode())
    deltas = stream(tokenizer, ids, skip_special_tokens=False)
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert all("\ufffd" not in delta for delta in deltas)


def test_emoji_split_across_byte_tokens_is_held_back(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    ids = byte_token_ids(tokenizer, "a😀".encode())  # a, then F0 9F 98 80
    assert [detok.add([i]) for i in ids] == ["a", "", "", "", "😀"]
    assert detok.finish() == ""


def test_special_token_between_the_bytes_of_a_character(tokenizer):
    first, *rest = byte_token_ids(tokenizer, "你".encode())
    ids = [first, tokenizer.eos_token_id, *rest]
    for skip in (True, False):
        assert "".join(stream(tokenizer, ids, skip)) == tokenizer.decode(ids, skip_special_tokens=skip)


def test_unfinished_character_at_the_end_is_flushed_by_finish(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    ids = [9707, *byte_token_ids(tokenizer, "😀".encode())[:2]]
    assert detok.add(ids) == "Hello"
    assert detok.finish() == "\ufffd" == tokenizer.decode(ids)[-1]


def test_special_tokens_are_skipped_by_default(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    text = detok.add(tokenizer.encode("<|im_start|>Hi<|im_end|>")) + detok.finish()
    assert text == "Hi"


@pytest.mark.parametrize("seed", range(4))
def test_random_ids_and_chunk_sizes_join_to_decode(tokenizer, seed):
    # Random byte tokens and random vocabulary entries: invalid UTF-8, lone continuation bytes, specials.
    rng = random.Random(seed)
    for _ in range(150):
        ids = [rng.choice((rng.randrange(256), rng.randrange(tokenizer.vocab_size))) for _ in range(rng.randint(0, 24))]
        skip = rng.random() < 0.5
        assert "".join(stream(tokenizer, ids, skip, rng)) == tokenizer.decode(ids, skip_special_tokens=skip)
