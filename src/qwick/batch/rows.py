"""Input rows of a batch file: JSONL (one JSON object per line) or Parquet (when pyarrow is importable).

A row keeps its 1-based line (row number in Parquet) so a malformed one can be reported by line and the run goes
on; its key is its `id` field, or the line number when it has none (what the output line carries)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_RAW_CHARS = 2000  # of a bad line, kept in the errors file
PARQUET_SUFFIXES = (".parquet", ".pq")


class RowError(ValueError):
    """One input row cannot be run; the message names the field."""


@dataclass
class InputRow:
    """One input line: `data` is the parsed object, or None with `error` set when the line is malformed."""

    line: int
    data: dict[str, Any] | None
    error: str | None = None
    raw: str = ""  # the line as read (only kept for malformed lines)

    @property
    def key(self) -> Any:
        """The output's `id`: the input's `id`, else the line number."""
        if self.data is None or "id" not in self.data:
            return self.line
        value = self.data["id"]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RowError(f"'id' must be a string or an integer, got {json.dumps(value)[:80]}")
        return value


def key_text(key: Any) -> str:
    """A key as one comparable string (1 and "1" stay different ids)."""
    return json.dumps(key)


def is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def check_input(path: str | Path) -> None:
    """Fail before the model loads on an input that cannot be read: missing, a folder, not JSONL, Parquet
    without pyarrow."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--input {path}: no such file")
    if path.is_dir():
        raise ValueError(f"--input {path} is a folder: pass a JSONL or Parquet file")
    if is_parquet(path):
        need_pyarrow("reading --input " + str(path))
        return
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    if head.startswith(b"PAR1"):
        raise ValueError(f"--input {path} is a Parquet file: name it *.parquet to read it as Parquet")
    if b"\x00" in head:
        raise ValueError(f"--input {path} is not JSONL (binary data): expected one JSON object per line")
    for number, line in enumerate(head.splitlines(), 1):
        if line.strip():
            try:
                first = json.loads(line)
            except ValueError:
                first = None
            if not isinstance(first, dict):
                raise ValueError(f"--input {path} is not JSONL: line {number} is not a JSON object (expected one "
                                 "JSON object per line, e.g. {\"id\": 1, \"text\": \"...\"})")
            return


def count_rows(path: str | Path) -> int:
    """Rows in the file (non-blank lines of JSONL; Parquet's row count), for the progress bar."""
    if is_parquet(path):
        return int(need_pyarrow("reading Parquet").parquet.ParquetFile(str(path)).metadata.num_rows)
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def read_rows(path: str | Path) -> Iterator[InputRow]:
    """Every row of the file, in order; a malformed line comes back with `error` set."""
    return _read_parquet(Path(path)) if is_parquet(path) else _read_jsonl(Path(path))


def parse_line(number: int, raw: bytes) -> InputRow:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputRow(number, None, f"line {number} is not UTF-8 ({exc.reason} at byte {exc.start})",
                        raw.decode("utf-8", "replace")[:MAX_RAW_CHARS])
    try:
        data = json.loads(text)
    except ValueError as exc:
        return InputRow(number, None, f"line {number} is not JSON: {exc}", text[:MAX_RAW_CHARS])
    if not isinstance(data, dict):
        return InputRow(number, None, f"line {number} is a JSON {type(data).__name__}, not an object",
                        text[:MAX_RAW_CHARS])
    return InputRow(number, data)


def _read_jsonl(path: Path) -> Iterator[InputRow]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if raw.strip():
                yield parse_line(number, raw.strip())


def _read_parquet(path: Path) -> Iterator[InputRow]:
    parquet = need_pyarrow("reading Parquet").parquet
    number = 0
    for batch in parquet.ParquetFile(str(path)).iter_batches(batch_size=1024):
        for data in batch.to_pylist():
            number += 1
            yield InputRow(number, data)


def need_pyarrow(why: str) -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # the submodule is what reads and writes files
    except ImportError:
        raise ValueError(f"{why} needs pyarrow: pip install pyarrow") from None
    return pyarrow
