"""Encoding and decoding agree with transformers, llama.cpp's Qwen2 vectors and the derived Qwen3 vectors."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from qwick.tokenizer.tokenizer import LONG_TEXT

ASSETS = Path(__file__).parents[1] / "assets" / "qwen3"

CORPUS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 3:45pm, isn't it? I'LL SAY 'S and 'Re.",
    "chinese": "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。你好，世界！",
    "japanese": "吾輩は猫である。名前はまだ無い。カタカナとひらがな、漢字。",
    "korean": "안녕하세요, 세계! 한국어 토큰화 테스트입니다.",
    "arabic": "مرحبا بالعالم! هذه جملة عربية للاختبار.",
    "hindi": "नमस्ते दुनिया! यह एक परीक्षण वाक्य है।",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "hebrew": "שלום עולם! זה משפט בדיקה בעברית.",
    "thai": "สวัสดีชาวโลก นี่คือประโยคทดสอบภาษาไทย",
    "german": "Größenwahn über Äpfel, Öl und Übermaß in der Straße.",
    "vietnamese": "Tiếng Việt có dấu: Xin chào thế giới, người đẹp.",
    "french": "Où est la bibliothèque ? Ça coûte 12,50 € — déjà vu.",
    "emoji": "😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇩🇪🇺🇸 ❤️‍🔥 🧑🏿‍💻",
    "code": 'def fib(n: int) -> int:\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)  # 🐍\n\nprint({"a": [1, 2.5e-3]})\n',
    "whitespace": "  lead\t\ttabs   and    runs\n\n\n\r\n  \n\t \u00a0nbsp\u3000ideographic  ",
    "special_tokens": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\n"
                      '<tool_call>\n{"name": "f"}\n</tool_call><|endoftext|>',
    "math": "∀x ∈ ℝ: x² ≥ 0, ∑ᵢ αᵢ = π ≈ 3.14159 ∞",
    "mixed": "Hello 世界 مرحبا 🌍 Привет 123,456.78 ok",
    "decomposed": "e\u0301 n\u0303 A\u030a (NFC composes these)",
}


def llama_cpp_cases() -> list[tuple[str, list[int]]]:
    """Parse the vectors the way llama.cpp's tests/test-tokenizer-0.cpp does.

    Inputs are separated by "\\n__ggml_vocab_test__\\n" (the newlines belong to the separator, so an input
    keeps its own leading/trailing newlines); the text after the last separator is empty and is no case.
    Each .out line holds the expected ids, space separated (a leading space, empty for "").
    """
    raw = (ASSETS / "ggml-vocab-qwen2.gguf.inp").read_text(encoding="utf-8")
    inputs = raw.split("\n__ggml_vocab_test__\n")
    assert inputs.pop() == ""
    outputs = (ASSETS / "ggml-vocab-qwen2.gguf.out").read_text(encoding="utf-8").splitlines()
    assert len(inputs) == len(outputs)
    return [(text, [int(t) for t in line.split()]) for text, line in zip(inputs, outputs, strict=True)]


LLAMA_CPP_CASES = llama_cpp_cases()
DERIVED_CASES = json.loads((ASSETS / "chat_template_renders.derived.json").read_text(encoding="utf-8"))["tokenize_cases"]


@pytest.mark.parametrize("text", CORPUS.values(), ids=CORPUS.keys())
def test_encode_matches_transformers(tokenizer, hf_tokenizer, text):
    assert tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("skip_special_tokens", [False, True])
@pytest.mark.parametrize("text", CORPUS.values(), ids=CORPUS.keys())
def test_decode_matches_transformers(tokenizer, hf_tokenizer, text, skip_special_tokens):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids, skip_special_tokens=skip_special_tokens) == hf_tokenizer.decode(
        ids, skip_special_tokens=skip_special_tokens)


@pytest.mark.parametrize("text", CORPUS.values(), ids=CORPUS.keys())
def test_decode_of_encode_is_the_nfc_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == unicodedata.normalize("NFC", text)


def test_decode_of_invalid_utf8_bytes_matches_transformers(tokenizer, hf_tokenizer):
    # byte tokens: a lone continuation byte, then a truncated 3-byte character
    ids = [tokenizer.token_to_id("¢"), 9707, tokenizer.token_to_id("ä")]
    assert tokenizer.decode(ids) == hf_tokenizer.decode(ids) == "\ufffdHello\ufffd"


@pytest.mark.parametrize("text,ids", LLAMA_CPP_CASES, ids=[f"case{i}" for i in range(len(LLAMA_CPP_CASES))])
def test_llama_cpp_qwen2_vector(tokenizer, text, ids):
    assert tokenizer.encode(text) == ids


def test_llama_cpp_vectors_are_all_46_read(tokenizer):
    assert len(LLAMA_CPP_CASES) == 46
    assert LLAMA_CPP_CASES[2] == ("", []) and LLAMA_CPP_CASES[7] == ("\n", [198])


@pytest.mark.parametrize("case", DERIVED_CASES, ids=[c["text"][:24] for c in DERIVED_CASES])
def test_derived_tokenize_case(tokenizer, case):
    assert tokenizer.encode(case["text"]) == case["ids"]
    assert tokenizer.convert_ids_to_tokens(case["ids"]) == case["tokens"]
    assert tokenizer.decode(case["ids"]) == case["decoded"]


@pytest.mark.parametrize("text,token_id", [("<|im_start|>", 151644), ("<|im_end|>", 151645), ("<|endoftext|>", 151643),
                                           ("<think>", 151667), ("</think>", 151668), ("<tool_call>", 151657)])
def test_added_token_written_in_text_is_one_id(tokenizer, text, token_id):
    assert tokenizer.encode(f"a{text}b") == [*tokenizer.encode("a"), token_id, *tokenizer.encode("b")]


def test_skip_special_tokens_keeps_think_and_tool_call_tags(tokenizer):
    assert tokenizer.decode([151667, 271, 151668, 271, 9707], skip_special_tokens=True) == "<think>\n\n</think>\n\nHello"
    assert tokenizer.decode([151657, 151658], skip_special_tokens=True) == "<tool_call></tool_call>"
    assert tokenizer.decode([151644, 9707, 151645, 151643], skip_special_tokens=True) == "Hello"


def test_encode_adds_no_bos_or_eos(tokenizer):
    assert tokenizer.encode("Hello world") == [9707, 1879]
    assert tokenizer.encode("") == []


def test_token_and_id_lookups(tokenizer):
    assert tokenizer.token_to_id("Ġworld") == 1879
    assert tokenizer.id_to_token(1879) == "Ġworld"
    assert tokenizer.id_to_token(151668) == "</think>"
    assert tokenizer.token_to_id("no such token") is None
    assert tokenizer.id_to_token(10**7) is None


def test_a_long_text_encodes_the_same_on_the_gil_free_path(tokenizer, hf_tokenizer):
    text = "<|im_start|>user\n" + "Héllo, wörld! 123 " * 1200 + "<|im_end|>"
    assert len(text) > LONG_TEXT
    assert tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
