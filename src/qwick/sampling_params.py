"""SamplingParams with vLLM's field names, validated once at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

MAX_LOGPROBS = 20
MAX_LOGIT_BIAS = 100.0  # OpenAI's range for a logit_bias value: [-100, 100]
MAX_STOP_STRINGS, MAX_STOP_CHARS = 64, 4096  # every stop string is searched for after every token
STRUCTURED_KINDS = ("json", "regex", "choice", "grammar", "json_object")


@dataclass(frozen=True)
class StructuredOutputsParams:
    """Constrain the output (vLLM's names): exactly one of a JSON schema, a regex, a list of choices, a
    grammar (Lark or GBNF/EBNF), or `json_object=True` for any JSON object. On Qwen3 with thinking, the
    constraint applies to the answer after `</think>`; the reasoning stays free."""

    json: dict[str, Any] | str | None = None  # a JSON schema, as a dict or JSON text
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:
        given = [k for k in STRUCTURED_KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError("structured_outputs needs exactly one of json, regex, choice, grammar or "
                             f"json_object=True; got {given or 'none'}")
        if self.json is not None and not isinstance(self.json, dict | str):
            raise ValueError(f"structured_outputs.json must be a JSON schema (object or JSON text), "
                             f"got {type(self.json).__name__}")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"structured_outputs.{name} must be a non-empty string, got {value!r}")
        if self.choice is not None and (
            not isinstance(self.choice, list | tuple) or not self.choice
            or any(not isinstance(c, str) or not c for c in self.choice)
        ):
            raise ValueError(f"structured_outputs.choice must be a non-empty list of non-empty strings, "
                             f"got {self.choice!r}")
        if self.json_object not in (None, True, False):
            raise ValueError(f"structured_outputs.json_object must be a boolean, got {self.json_object!r}")

    @property
    def kind(self) -> str:
        return next(k for k in STRUCTURED_KINDS if getattr(self, k) not in (None, False))


@dataclass(frozen=True)
class GenerationDefaults:
    """The model's `generation_config.json` values used for fields a request leaves unset."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GenerationDefaults:
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
        sampling = raw.get("do_sample", True)
        return cls(
            temperature=float(raw.get("temperature", 1.0)) if sampling else 0.0,
            top_p=float(raw.get("top_p", 1.0)),
            top_k=int(raw.get("top_k", 0) or 0),
            min_p=float(raw.get("min_p", 0.0) or 0.0),
            repetition_penalty=float(raw.get("repetition_penalty", 1.0) or 1.0),
            eos_token_ids=eos_ids,
        )


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request. `None` for temperature/top_p/top_k/min_p/repetition_penalty means
    "the model's generation_config.json value" (Qwen3: temperature 0.6, top_p 0.95, top_k 20)."""

    n: int = 1
    temperature: float | None = None  # 0 = greedy
    top_p: float | None = None
    top_k: int | None = None  # 0 or -1 = disabled
    min_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = 16  # None = up to the context length
    min_tokens: int = 0
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None  # top-k logprobs per generated token (the sampled token always included)
    skip_special_tokens: bool = True
    max_thinking_tokens: int | None = None  # thinking budget, see docs/thinking.md
    structured_outputs: StructuredOutputsParams | None = None
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling (OpenAI's)
    jump_forward: bool = True  # append tokens a grammar or the thinking budget forces without sampling them
    stop_strings: tuple[str, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        _check_int("n", self.n, 1)
        _check_range("temperature", self.temperature, 0.0, None, "must be >= 0 (0 means greedy)")
        # top_p 0 is the smallest nucleus, the most likely token alone (vLLM and OpenAI accept it too)
        _check_range("top_p", self.top_p, 0.0, 1.0, "must be in [0, 1]")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < -1):
            raise ValueError(f"top_k must be an integer >= 1, or 0 / -1 to disable it; got {self.top_k!r}")
        _check_range("min_p", self.min_p, 0.0, 1.0, "must be in [0, 1]")
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0, "must be in [-2, 2]")
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0, "must be in [-2, 2]")
        _check_range("repetition_penalty", self.repetition_penalty, 0.0, None, "must be > 0", low_open=True)
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens, 1)
        _check_int("min_tokens", self.min_tokens, 0)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must be <= max_tokens ({self.max_tokens})")
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, 0, MAX_LOGPROBS)
        if self.max_thinking_tokens is not None:
            _check_int("max_thinking_tokens", self.max_thinking_tokens, 0)
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not isinstance(s, str) for s in stops):
            raise ValueError(f"stop must be a string or a list of strings, got {self.stop!r}")
        stops = [s for s in stops if s]  # "" stops nothing: ignored (OpenAI accepts it)
        if len(stops) > MAX_STOP_STRINGS or sum(len(s) for s in stops) > MAX_STOP_CHARS:
            raise ValueError(f"stop allows at most {MAX_STOP_STRINGS} strings of {MAX_STOP_CHARS} characters in "
                             f"all, got {len(stops)} of {sum(len(s) for s in stops)}")
        object.__setattr__(self, "stop_strings", tuple(stops))
        if self.structured_outputs is not None and not isinstance(self.structured_outputs, StructuredOutputsParams):
            raise ValueError("structured_outputs must be a StructuredOutputsParams, "
                             f"got {type(self.structured_outputs).__name__}")
        for token, bias in (self.logit_bias or {}).items():
            if not _is_int(token) or token < 0:
                raise ValueError(f"logit_bias keys must be token ids (non-negative integers), got {token!r}")
            _check_range("logit_bias", bias, -MAX_LOGIT_BIAS, MAX_LOGIT_BIAS,
                         f"values must be in [-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}] (token {token})")
        if not isinstance(self.jump_forward, bool):
            raise ValueError(f"jump_forward must be a boolean, got {self.jump_forward!r}")
        for token in self.stop_token_ids or []:
            if not _is_int(token) or token < 0:
                raise ValueError(f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")

    def resolved(self, defaults: GenerationDefaults) -> SamplingParams:
        """A copy with every `None` model-default field filled in."""
        return replace(
            self,
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            min_p=defaults.min_p if self.min_p is None else self.min_p,
            repetition_penalty=(
                defaults.repetition_penalty if self.repetition_penalty is None else self.repetition_penalty
            ),
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def _check_range(name: str, value: float | None, low: float, high: float | None, rule: str,
                 low_open: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} {rule}, got {value!r}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        raise ValueError(f"{name} {rule}, got {value!r}")
