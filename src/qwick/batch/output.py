"""The output file: one JSON line per finished row, flushed as each row finishes, so a crash loses only the rows
in flight; re-opening it reads the ids already done (resume) and cuts a line a crash left half-written.

A Parquet output (`*.parquet`, needs pyarrow) is written as JSONL beside it (`OUT.partial.jsonl`, resumable the
same way) and converted when the run completes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from qwick.batch.rows import is_parquet, key_text, need_pyarrow


def check_output(output: str | Path, input_path: str | Path, errors: str | Path) -> None:
    """Fail before the model loads on an output that cannot be written."""
    out = Path(output)
    for flag, path in (("--output", out), ("--errors", Path(errors))):
        if path.is_dir():
            raise ValueError(f"{flag} {path} is a folder: pass a file path (e.g. {path / 'out.jsonl'})")
        if not path.parent.is_dir():
            raise ValueError(f"{flag} {path}: the folder {path.parent} does not exist")
        if path.exists() and Path(input_path).exists() and path.samefile(input_path):
            raise ValueError(f"{flag} {path} is the input file: write to another file")
    if out.exists() and Path(errors).exists() and out.samefile(errors):
        raise ValueError("--output and --errors are the same file")
    if is_parquet(out):
        need_pyarrow("writing --output " + str(out))


def default_errors_path(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.name.rsplit(".", 1)[0] + ".errors.jsonl")


class OutputFile:
    """Appends output rows; `done` holds the keys (key_text) already written by this or an earlier run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parquet = is_parquet(self.path)
        self.lines_path = self.path.with_name(self.path.name + ".partial.jsonl") if self.parquet else self.path
        if self.parquet and self.path.exists() and not self.lines_path.exists():
            self._unpack_parquet()
        self.done: set[str] = self._read_done()
        self._handle: IO[str] = self.lines_path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        # one write of a whole line, flushed: a crash leaves whole lines, or a cut last one that resume drops
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.done.add(key_text(row["id"]))

    def close(self, complete: bool) -> None:
        """Close; a Parquet output is converted once the run is `complete` (else the JSONL stays, to resume)."""
        self._handle.close()
        if self.parquet and complete:
            parquet = need_pyarrow("writing Parquet").parquet
            rows = [json.loads(line) for line in self.lines_path.read_text(encoding="utf-8").splitlines()]
            parquet.write_table(need_pyarrow("writing Parquet").Table.from_pylist(rows), str(self.path))
            self.lines_path.unlink()

    def _unpack_parquet(self) -> None:
        """A finished Parquet output being resumed (new input rows): back to lines, converted again at the end."""
        rows = need_pyarrow("reading Parquet").parquet.read_table(str(self.path)).to_pylist()
        with self.lines_path.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    def _read_done(self) -> set[str]:
        if not self.lines_path.exists():
            return set()
        done: set[str] = set()
        with self.lines_path.open("rb") as handle:
            data = handle.read()
        good = 0  # bytes of whole, valid lines
        for number, line in enumerate(data.splitlines(keepends=True), 1):
            try:
                row = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                row = None
            if row is None and good + len(line) == len(data):  # the last line, cut by a crash: redo that row
                break
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError(f"--output {self.path}: line {number} is not a qwick batch output row (a JSON "
                                 "object with an 'id'): pass a new file, or the output of an earlier run to resume")
            done.add(key_text(row["id"]))
            good += len(line)
        if good < len(data):
            with self.lines_path.open("r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())
        return done


class ErrorsFile:
    """The rows without output of this run, one JSON line each ({"line", "id"?, "error", "input"?}); started
    afresh each run (a resumed run retries earlier errors, so this lists every row still missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._handle: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self._handle = self.path.open("w", encoding="utf-8")
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        elif self.path.exists():
            self.path.unlink()  # no errors this run: an old file would list rows that are done now
