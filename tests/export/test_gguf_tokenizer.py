"""The tokenizer written into the GGUF (llama.cpp's conventions) and qwick's tokenizer read back from it."""

from __future__ import annotations

import json

import gguf
import pytest

from qwick.tokenizer import Tokenizer

T = gguf.TokenType
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 3:45pm, isn't it? I'LL SAY 'S and 'Re.",
    "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。你好，世界！",
    "吾輩は猫である。名前はまだ無い。カタカナとひらがな、漢字。",
    "안녕하세요, 세계! 한국어 토큰화 테스트입니다.",
    "مرحبا بالعالم! هذه جملة عربية للاختبار.",
    "नमस्ते दुनिया! यह एक परीक्षण वाक्य है।",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "สวัสดีชาวโลก นี่คือประโยคทดสอบภาษาไทย",
    "😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇩🇪🇺🇸 ❤️‍🔥 🧑🏿‍💻",
    'def fib(n: int) -> int:\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)  # 🐍\n',
    "  lead\t\ttabs   and    runs\n\n\n\r\n  \n\t \u00a0nbsp\u3000ideographic  ",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\n"
    '<tool_call>\n{"name": "f"}\n</tool_call><|endoftext|>',
    "e\u0301 n\u0303 A\u030a (NFC composes these) ∀x ∈ ℝ: x² ≥ 0",
]


@pytest.fixture(scope="module")
def pair(tiny_model_dir, tokenizer_export) -> tuple[Tokenizer, Tokenizer]:
    return Tokenizer.from_pretrained(tiny_model_dir), tokenizer_export.tokenizer()


def test_tokenizer_metadata_follows_convert_hf_to_gguf(tokenizer_export):
    meta = tokenizer_export.meta
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "qwen2"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 151936  # the config's vocab_size, padded
    assert tokens[151645] == "<|im_end|>" and types[151645] == T.CONTROL
    assert tokens[151667] == "<think>" and types[151667] == T.USER_DEFINED
    assert tokens[151659] == "<|fim_prefix|>" and types[151659] == T.CONTROL  # not special in HF, looks special
    assert tokens[151700] == "[PAD151700]" and types[151700] == T.UNUSED
    assert types[0] == T.NORMAL and len(meta["tokenizer.ggml.merges"]) == 151387
    assert meta["tokenizer.ggml.eos_token_id"] == 151645 and meta["tokenizer.ggml.eot_token_id"] == 151645
    assert meta["tokenizer.ggml.padding_token_id"] == 151643 and meta["tokenizer.ggml.bos_token_id"] == 151643
    assert meta["tokenizer.ggml.add_bos_token"] is False


@pytest.mark.parametrize("text", CORPUS)
def test_tokenizer_from_gguf_encodes_and_decodes_like_the_source(pair, text):
    source, from_file = pair
    ids = source.encode(text)
    assert from_file.encode(text) == ids
    assert from_file.decode(ids) == source.decode(ids)


def test_special_roles_and_chat_template_round_trip(pair, tiny_model_dir):
    source, from_file = pair
    assert from_file.chat_template == source.chat_template  # byte-identical
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert from_file.chat_template.encode() == config["chat_template"].encode()
    assert (from_file.eos_token_id, from_file.pad_token_id) == (source.eos_token_id, source.pad_token_id)
    assert from_file.vocab_size == source.vocab_size
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    assert from_file.apply_chat_template(messages, tools=tools, enable_thinking=False) == \
        source.apply_chat_template(messages, tools=tools, enable_thinking=False)
