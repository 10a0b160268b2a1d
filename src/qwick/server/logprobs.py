"""Engine logprobs (`{token_id: Logprob}` per generated token) in OpenAI's chat and legacy completions formats."""

from __future__ import annotations

from qwick.outputs import Logprob, TokenLogprobs
from qwick.server.protocol.chat import ChatLogprobs, TokenLogprob, TopLogprob
from qwick.server.protocol.completions import CompletionLogprobs
from qwick.tokenizer import Tokenizer
from qwick.tokenizer.byte_level import byte_decoder


def chat_logprobs(tokenizer: Tokenizer, token_ids: list[int], entries: list[TokenLogprobs],
                  top_n: int) -> ChatLogprobs:
    content = []
    for token_id, entry in zip(token_ids, entries, strict=False):
        chosen = entry[token_id]
        top = [TopLogprob(token=lp.decoded_token, logprob=lp.logprob, bytes=token_bytes(tokenizer, tid, lp))
               for tid, lp in _top(entry, top_n)]
        content.append(TokenLogprob(token=chosen.decoded_token, logprob=chosen.logprob,
                                    bytes=token_bytes(tokenizer, token_id, chosen), top_logprobs=top))
    return ChatLogprobs(content=content)


def completion_logprobs(token_ids: list[int], entries: list[TokenLogprobs], top_n: int,
                        text_offset: int) -> CompletionLogprobs:
    tokens, values, tops, offsets = [], [], [], []
    for token_id, entry in zip(token_ids, entries, strict=False):
        chosen = entry[token_id]
        tokens.append(chosen.decoded_token)
        values.append(chosen.logprob)
        tops.append({lp.decoded_token: lp.logprob for _, lp in _top(entry, top_n)})
        offsets.append(text_offset)
        text_offset += len(chosen.decoded_token)
    return CompletionLogprobs(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)


def _top(entry: TokenLogprobs, top_n: int) -> list[tuple[int, Logprob]]:
    """The top_n most likely tokens (the sampled one is in the entry too, listed only if it is among them)."""
    return sorted(entry.items(), key=lambda item: item[1].rank)[:top_n] if top_n else []


def token_bytes(tokenizer: Tokenizer, token_id: int, logprob: Logprob) -> list[int]:
    """The token's exact bytes: a token can hold part of a UTF-8 character, which its decoded text cannot show."""
    piece = tokenizer.id_to_token(token_id)
    decoder = byte_decoder()
    if piece is not None and all(char in decoder for char in piece):
        return [decoder[char] for char in piece]
    return list(logprob.decoded_token.encode("utf-8"))
