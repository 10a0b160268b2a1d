"""SpeculativeConfig: vLLM's `speculative_config` dict for the n-gram (prompt lookup) method, validated once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

METHODS = ("ngram",)
KEYS = ("method", "num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max")
MAX_SPECULATIVE_TOKENS = 32  # drafts per step: every one is a row of the next forward


@dataclass(frozen=True)
class SpeculativeConfig:
    num_speculative_tokens: int  # drafts proposed per step (k)
    prompt_lookup_min: int  # the shortest tail n-gram that may be matched
    prompt_lookup_max: int  # the longest, tried first
    method: str = "ngram"

    @classmethod
    def parse(cls, raw: dict[str, Any] | str | None) -> SpeculativeConfig | None:
        """vLLM's dict (or its JSON text, as `--speculative-config` gives it) -> a checked config; None: off.
        Defaults as vLLM's: one of prompt_lookup_min/max stands for the other; neither given means 5 and 5."""
        if raw is None:
            return None
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"speculative_config is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"speculative_config must be a JSON object / dict, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise ValueError(f"speculative_config: unsupported keys {unknown}; qwick's n-gram speculation takes "
                             f"{', '.join(KEYS)} (draft models and EAGLE are not supported)")
        method = raw.get("method", "ngram")
        if method not in METHODS:
            raise ValueError(f"speculative_config.method must be 'ngram' (prompt lookup), got {method!r}")
        if "num_speculative_tokens" not in raw:
            raise ValueError("speculative_config.num_speculative_tokens is required (drafts per step, e.g. 4)")
        k = _positive("num_speculative_tokens", raw["num_speculative_tokens"])
        if k > MAX_SPECULATIVE_TOKENS:
            raise ValueError(f"speculative_config.num_speculative_tokens must be <= {MAX_SPECULATIVE_TOKENS}, "
                             f"got {k}")
        low, high = (None if raw.get(name) is None else _positive(name, raw[name])
                     for name in ("prompt_lookup_min", "prompt_lookup_max"))
        if low is None and high is None:
            low = high = 5
        low, high = (high if low is None else low), (low if high is None else high)
        assert low is not None and high is not None
        if low > high:
            raise ValueError(f"speculative_config.prompt_lookup_min ({low}) must be <= prompt_lookup_max ({high})")
        return cls(k, low, high, method)


def _positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"speculative_config.{name} must be a positive integer, got {value!r}")
    return value
