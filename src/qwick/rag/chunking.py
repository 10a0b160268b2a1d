"""Token-based chunking on paragraph and sentence boundaries.

A document is cut into units (sentences inside paragraphs; a sentence longer than a chunk is cut between words,
a word longer than a chunk into pieces), then units are packed into chunks of at most `chunk_tokens` tokens
(counted per unit with the embedding model's tokenizer, so a chunk's total is within a token or two of its
re-tokenized length). Consecutive chunks overlap by whole trailing sentences of up to `overlap` tokens (none
when the last sentence alone is longer). A chunk is a span of the original text, so its formatting is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qwick.tokenizer import Tokenizer

PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
SENTENCE = re.compile(r"(?<=[.!?;:。！？])\s+|\n+")
_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Chunk:
    n: int  # position in its document: the chunk id is f"{doc_id}#{n}"
    text: str
    tokens: int  # the chunk's own token count (re-tokenized)


def check_sizes(chunk_tokens: int, overlap: int) -> None:
    if chunk_tokens < 8:
        raise ValueError(f"--chunk-tokens must be at least 8, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens // 2:
        raise ValueError(f"--overlap must be in [0, {chunk_tokens // 2}) for --chunk-tokens {chunk_tokens}, "
                         f"got {overlap}")


def chunk_text(text: str, tokenizer: Tokenizer, chunk_tokens: int = 256, overlap: int = 32) -> list[Chunk]:
    check_sizes(chunk_tokens, overlap)
    spans = [s for s in _units(text, tokenizer, chunk_tokens) if text[s[0]:s[1]].strip()]
    counts = [_count(tokenizer, text[a:b]) for a, b in spans]
    chunks: list[Chunk] = []
    start = 0
    while start < len(spans):
        end, total = start, 0
        while end < len(spans) and (end == start or total + counts[end] <= chunk_tokens):
            total += counts[end]
            end += 1
        body = text[spans[start][0]:spans[end - 1][1]].strip()
        chunks.append(Chunk(len(chunks), body, _count(tokenizer, body)))
        if end == len(spans):
            break
        back, carried = end, 0  # overlap: whole trailing units of this chunk, up to `overlap` tokens
        while back - 1 > start and carried + counts[back - 1] <= overlap:
            back -= 1
            carried += counts[back]
        start = back
    return chunks


def _units(text: str, tokenizer: Tokenizer, limit: int) -> list[tuple[int, int]]:
    """(start, end) character spans of sentences, each at most `limit` tokens."""
    spans = []
    for pa, pb in _split(text, 0, len(text), PARAGRAPH):
        for sa, sb in _split(text, pa, pb, SENTENCE):
            if _count(tokenizer, text[sa:sb]) <= limit:
                spans.append((sa, sb))
            else:
                spans.extend(_cut_long(text, sa, sb, tokenizer, limit))
    return spans


def _split(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    out, at = [], start
    for match in separator.finditer(text, start, end):
        if match.start() > at:
            out.append((at, match.start()))
        at = match.end()
    if at < end:
        out.append((at, end))
    return out


def _cut_long(text: str, start: int, end: int, tokenizer: Tokenizer, limit: int) -> list[tuple[int, int]]:
    """A sentence over the limit: cut between words; a single word over it, every `limit` characters (a token
    is at least one character, so such a piece is at most `limit` tokens)."""
    pieces: list[tuple[int, int]] = []
    for match in _WORD.finditer(text, start, end):
        a, b = match.span()
        while b - a > limit and _count(tokenizer, text[a:b]) > limit:
            pieces.append((a, a + limit))
            a += limit
        pieces.append((a, b))
    merged: list[tuple[int, int]] = []
    total = 0
    for a, b in pieces:  # pack words back together up to the limit (summed per word)
        count = _count(tokenizer, text[a:b])
        if merged and total + count <= limit:
            merged[-1], total = (merged[-1][0], b), total + count
        else:
            merged.append((a, b))
            total = count
    return merged


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text))
