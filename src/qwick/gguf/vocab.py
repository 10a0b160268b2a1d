"""The tokenizer <-> GGUF metadata, as convert_hf_to_gguf.py writes it for Qwen2/Qwen3 (`_set_vocab_gpt2`).

Written: tokenizer.ggml.model "gpt2" (byte-level BPE), tokenizer.ggml.pre "qwen2" (the pre-tokenizer name
llama.cpp maps to Qwen's split regex), every id's token and type (added tokens CONTROL when special or shaped
like `<|...|>`, else USER_DEFINED; ids the config has beyond the tokenizer `[PAD{i}]` UNUSED), the merges and
special ids (bos/eos/pad and add_bos_token) through the gguf package's own `SpecialVocab`, eot = `<|im_end|>`,
and tokenizer.chat_template. Read back into a `tokenizers` tokenizer that encodes like Qwen's tokenizer.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import tokenizers

from qwick.tokenizer import Tokenizer

PRE_TOKENIZER = "qwen2"
# Qwen2/Qwen3's tokenizer.json split pattern; llama.cpp's "qwen2" pre-tokenizer is this regex
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")
EOT_TOKEN = "<|im_end|>"
T = gguf.TokenType


def write_vocab(writer: gguf.GGUFWriter, folder: Path, tokenizer: Tokenizer, vocab_size: int) -> None:
    tokens, types = token_table(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.chat_template = tokenizer.chat_template  # qwick's choice: chat_template.jinja over the config's
    special.add_to_gguf(writer, quiet=True)
    eot = tokenizer.token_to_id(EOT_TOKEN)
    if eot is not None:
        writer.add_eot_token_id(eot)


def token_table(tokenizer: Tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """(token text, llama.cpp token type) for ids 0..vocab_size-1, like convert_hf_to_gguf.get_vocab_base."""
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    if reverse and max(reverse) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(reverse)}, beyond the model's vocab_size {vocab_size}")
    added = tokenizer._backend.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(T.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(T.CONTROL if added[i].special or _looks_special(reverse[i]) else T.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(T.NORMAL)
    return tokens, types


def _looks_special(token: str) -> bool:
    # convert_hf_to_gguf.does_token_look_special: `<|...|>` added tokens are control tokens even if not special
    return token.startswith("<|") and token.endswith("|>")


def tokenizer_from_meta(meta: dict[str, Any], source: str) -> Tokenizer:
    """qwick's Tokenizer built from a GGUF's tokenizer.ggml.* metadata and its chat template."""
    model = meta.get(gguf.Keys.Tokenizer.MODEL)
    if model is None:
        raise ValueError(f"{source} has no tokenizer (no {gguf.Keys.Tokenizer.MODEL}): pass tokenizer=FOLDER "
                         "or skip_tokenizer_init=True")
    pre = meta.get(gguf.Keys.Tokenizer.PRE, "default")
    if model != "gpt2" or pre != PRE_TOKENIZER:
        raise ValueError(f"{source}: tokenizer model {model!r} with pre-tokenizer {pre!r} is not Qwen's "
                         f"(qwick reads 'gpt2' with {PRE_TOKENIZER!r})")
    tokens: list[str] = meta[gguf.Keys.Tokenizer.LIST]
    types: list[int] = meta.get(gguf.Keys.Tokenizer.TOKEN_TYPE) or [T.NORMAL] * len(tokens)
    merges = meta.get(gguf.Keys.Tokenizer.MERGES) or []
    spec = _tokenizer_json(tokens, types, merges)
    backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
    roles = {}
    for role, key in (("eos_token", gguf.Keys.Tokenizer.EOS_ID), ("pad_token", gguf.Keys.Tokenizer.PAD_ID),
                      ("unk_token", gguf.Keys.Tokenizer.UNK_ID)):
        if key in meta and 0 <= meta[key] < len(tokens):
            roles[role] = tokens[meta[key]]
    if meta.get(gguf.Keys.Tokenizer.ADD_BOS) and gguf.Keys.Tokenizer.BOS_ID in meta:
        roles["bos_token"] = tokens[meta[gguf.Keys.Tokenizer.BOS_ID]]
    extra = [t["content"] for t in spec["added_tokens"] if t["special"] and t["content"] not in roles.values()]
    return Tokenizer(backend, chat_template=meta.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE),
                     special_tokens_map=roles, additional_special_tokens=extra)


def _tokenizer_json(tokens: list[str], types: list[int], merges: list[str]) -> dict[str, Any]:
    """Qwen's tokenizer.json shape: NFC, the qwen2 split + byte-level pre-tokenizer, BPE, added tokens by id."""
    vocab = {t: i for i, (t, kind) in enumerate(zip(tokens, types, strict=True)) if kind in (T.NORMAL, T.BYTE)}
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": kind == T.CONTROL}
             for i, (t, kind) in enumerate(zip(tokens, types, strict=True)) if kind in (T.CONTROL, T.USER_DEFINED)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [m.split(" ") for m in merges]},
    }
