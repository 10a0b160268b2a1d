"""GPT-2's byte <-> unicode map, in which Qwen's byte-level BPE vocabulary is written."""

from __future__ import annotations

from functools import cache


@cache
def byte_decoder() -> dict[str, int]:
    """Vocabulary character -> the byte it stands for (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars
