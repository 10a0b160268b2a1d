"""transformers' tokenizer call signatures on qwick's Tokenizer, so code written for vLLM's `get_tokenizer()`
(a transformers tokenizer) runs unchanged: `tok(texts)`, `encode(..., add_special_tokens=)`, `batch_decode`,
`convert_tokens_to_ids`, the special-token roles as text and ids.

One deliberate difference: `vocab_size` counts the added tokens too (= `len(tok)`, the id range qwick checks
prompts against); transformers' `vocab_size` leaves them out (151643 vs 151669 on Qwen3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class BatchEncoding(dict[str, Any]):
    """transformers' `BatchEncoding` as far as callers read it: a dict that also answers `.input_ids`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Backend(Protocol):
    special_tokens_map: dict[str, str]
    additional_special_tokens: list[str]
    pad_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...
    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...


class HFTokenizerAPI:
    """Mixed into `Tokenizer`; everything here is built on its encode/decode/token_to_id."""

    def __call__(self: _Backend, text: str | Sequence[str], add_special_tokens: bool = True,
                 padding: bool | str = False, return_attention_mask: bool = True,
                 return_tensors: str | None = None) -> BatchEncoding:
        """`input_ids` (and `attention_mask`) of one text or a list; `padding=True` pads the batch on the right
        with the pad token, `return_tensors="pt"` gives torch tensors (a batch of one for a single text)."""
        single = isinstance(text, str)
        ids = [self.encode(t, add_special_tokens=add_special_tokens) for t in ([text] if single else text)]
        masks = [[1] * len(row) for row in ids]
        if padding not in (True, "longest", False, "do_not_pad"):
            raise ValueError(f"padding={padding!r} is not supported: use True/'longest' or False")
        if padding not in (False, "do_not_pad"):
            if self.pad_token_id is None:
                raise ValueError("this tokenizer has no pad_token: it cannot pad")
            width = max((len(row) for row in ids), default=0)
            masks = [m + [0] * (width - len(m)) for m in masks]
            ids = [row + [self.pad_token_id] * (width - len(row)) for row in ids]
        out = BatchEncoding(input_ids=ids[0] if single and return_tensors is None else ids)
        if return_attention_mask:
            out["attention_mask"] = masks[0] if single and return_tensors is None else masks
        if return_tensors == "pt":
            import torch

            return BatchEncoding({k: torch.tensor(v, dtype=torch.long) for k, v in out.items()})
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported: use 'pt' or None")
        return out

    def batch_decode(self: _Backend, sequences: Iterable[Iterable[int]], skip_special_tokens: bool = False,
                     **_: Any) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    def convert_tokens_to_ids(self: _Backend, tokens: str | Sequence[str]) -> int | list[int | None] | None:
        if isinstance(tokens, str):
            return self.token_to_id(tokens)
        return [self.token_to_id(t) for t in tokens]

    @property
    def all_special_tokens(self: _Backend) -> list[str]:
        """Role tokens (bos, eos, ... in transformers' order), then `additional_special_tokens`, each once."""
        tokens = [*self.special_tokens_map.values(), *self.additional_special_tokens]
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int | None]:
        return [self.token_to_id(t) for t in self.all_special_tokens]  # type: ignore[attr-defined]

    @property
    def bos_token(self: _Backend) -> str | None:
        return self.special_tokens_map.get("bos_token")

    @property
    def eos_token(self: _Backend) -> str | None:
        return self.special_tokens_map.get("eos_token")

    @property
    def pad_token(self: _Backend) -> str | None:
        return self.special_tokens_map.get("pad_token")

    @property
    def unk_token(self: _Backend) -> str | None:
        return self.special_tokens_map.get("unk_token")

    @property
    def bos_token_id(self) -> int | None:
        token = self.bos_token
        return None if token is None else self.token_to_id(token)  # type: ignore[attr-defined]
