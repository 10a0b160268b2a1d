"""The Qwen3 tokenizer: a thin layer over Hugging Face `tokenizers` plus the chat template.

Loads the files of a Hugging Face model folder (`tokenizer.json`, `tokenizer_config.json`, optionally
`chat_template.jinja`) without depending on `transformers`, and behaves like `transformers`' tokenizer for
the calls an inference engine needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from qwick.tokenizer.chat import ChatTemplate
from qwick.tokenizer.hf_api import HFTokenizerAPI

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# The role names transformers exposes as `special_tokens_map` (and hands to chat templates as variables).
SPECIAL_TOKEN_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
THINK_START, THINK_END = "<think>", "</think>"

LONG_TEXT = 16_384  # characters


class Tokenizer(HFTokenizerAPI):
    """Byte-level BPE tokenizer with chat-template rendering; see `from_pretrained`. Also answers transformers'
    common calls (qwick.tokenizer.hf_api)."""

    def __init__(self, backend: tokenizers.Tokenizer, *, chat_template: str | None = None,
                 special_tokens_map: Mapping[str, str] | None = None,
                 additional_special_tokens: Sequence[str] = ()) -> None:
        self._backend = backend
        self.chat_template = chat_template
        self.special_tokens_map = dict(special_tokens_map or {})
        self.additional_special_tokens = list(additional_special_tokens)
        added = backend.get_added_tokens_decoder()
        self.special_token_ids = frozenset(i for i, token in added.items() if token.special)
        # Max id + 1 rather than a count, so an id gap could never make a valid id look out of range.
        self.vocab_size = max(backend.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        self.eos_token_id = self._role_id("eos_token")
        self.pad_token_id = self._role_id("pad_token")
        self.think_start_id = backend.token_to_id(THINK_START)
        self.think_end_id = backend.token_to_id(THINK_END)
        self._templates: dict[str, ChatTemplate] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """Load from a model folder; a `chat_template.jinja` there wins over the config's `chat_template`."""
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder {str(folder)!r} does not exist or is not a directory; "
                                    f"pass the model folder that holds {TOKENIZER_FILE}")
        tokenizer_file = folder / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"{TOKENIZER_FILE} not found in tokenizer folder {str(folder)!r}; "
                                    "qwick needs the fast-tokenizer file that Hugging Face model folders ship")
        config_file = folder / CONFIG_FILE
        config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        template_file = folder / CHAT_TEMPLATE_FILE
        if template_file.is_file():
            chat_template = template_file.read_text(encoding="utf-8")
        else:
            chat_template = config.get("chat_template")
        if chat_template is not None and not isinstance(chat_template, str):
            raise ValueError(f"{config_file}: only a single string `chat_template` is supported, "
                             f"got {type(chat_template).__name__}")
        roles = {role: _token_text(config[role]) for role in SPECIAL_TOKEN_ROLES if config.get(role) is not None}
        extra = [_token_text(t) for t in config.get("additional_special_tokens") or []]
        return cls(tokenizers.Tokenizer.from_file(str(tokenizer_file)), chat_template=chat_template,
                   special_tokens_map=roles, additional_special_tokens=extra)

    def to_json(self) -> str:
        """The tokenizer as `tokenizer.json` text (grammar backends build their own index from it)."""
        return self._backend.to_str()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; added tokens written in the text (`<|im_start|>`, `<think>`) are recognised.
        `add_special_tokens` applies tokenizer.json's post-processor (Qwen3's adds nothing, so either gives
        transformers' ids)."""
        if len(text) > LONG_TEXT:  # encode_batch releases the GIL: a server thread tokenizing stalls nobody
            return self._backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False, **_: Any) -> str:
        """Text of `ids` (a list, a tensor or one id); extra transformers options are accepted and ignored."""
        return self._backend.decode(_id_list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def convert_ids_to_tokens(self, ids: Iterable[int] | int,
                              skip_special_tokens: bool = False) -> str | list[str | None] | None:
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        return [self._backend.id_to_token(i) for i in _id_list(ids)
                if not (skip_special_tokens and i in self.special_token_ids)]

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None,
                            add_generation_prompt: bool = True, tokenize: bool = False, *,
                            chat_template: str | None = None, **template_kwargs: Any) -> str | list[int]:
        """Render `messages` like `transformers`' `apply_chat_template` (e.g. `enable_thinking=False`)."""
        rendered = self._template(chat_template).render(
            messages, tools=tools, add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens_map, **template_kwargs})
        return self.encode(rendered) if tokenize else rendered

    def __len__(self) -> int:
        return self.vocab_size

    def _template(self, source: str | None) -> ChatTemplate:
        source = source if source is not None else self.chat_template
        if source is None:
            raise ValueError("this tokenizer has no chat template: add `chat_template` to tokenizer_config.json, "
                             "a chat_template.jinja file to the model folder, or pass chat_template=...")
        if source not in self._templates:
            self._templates[source] = ChatTemplate(source)
        return self._templates[source]

    def _role_id(self, role: str) -> int | None:
        token = self.special_tokens_map.get(role)
        return None if token is None else self._backend.token_to_id(token)


def _id_list(ids: Iterable[int] | int) -> list[int]:
    # one id, a list, or a tensor / numpy array (whose items are not Python ints)
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


def _token_text(value: str | Mapping[str, Any]) -> str:
    # Older configs serialise role tokens as AddedToken dicts rather than plain strings.
    return value if isinstance(value, str) else str(value["content"])
