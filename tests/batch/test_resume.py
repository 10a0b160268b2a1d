"""Resuming: a run killed mid-way and run again ends with every row exactly once; a line cut by the crash is
redone; rows already in the output are not run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from batchkit import make_rows, read_jsonl, write_jsonl
from qwick.cli import main

QWICK = [sys.executable, "-m", "qwick.cli"]


def batch_args(model, src, out, *extra):
    return ["batch", str(model), "--input", str(src), "--output", str(out), "--task", "generate", "--max-tokens", "4",
            "--temperature", "0", "--dtype", "float32", "--device", "cpu", "--max-model-len", "256", *extra]


def test_a_killed_run_resumes_without_duplicates_or_gaps(tiny_model_dir, tmp_path):
    rows = make_rows("generate", 300)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen([*QWICK, *batch_args(tiny_model_dir, src, out, "--window", "4", "--no-progress")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while (not out.exists() or out.read_bytes().count(b"\n") < 30) and time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)  # mid-run: rows in flight are lost
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.stderr.close()
    before = out.read_bytes().count(b"\n")
    assert 30 <= before < len(rows)

    assert main(batch_args(tiny_model_dir, src, out, "--no-progress")) == 0
    resumed = read_jsonl(out)
    assert sorted(r["id"] for r in resumed) == sorted(r["id"] for r in rows)  # every row once: no dupes, no gaps
    fresh = tmp_path / "fresh.jsonl"
    assert main(batch_args(tiny_model_dir, src, fresh, "--no-progress")) == 0
    by_id = {r["id"]: r for r in read_jsonl(fresh)}
    assert all(r == by_id[r["id"]] for r in resumed)  # greedy: the rows done before the kill are the same rows


def test_a_line_cut_by_a_crash_is_redone(tiny_model_dir, tmp_path, capsys):
    rows = make_rows("generate", 6)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(batch_args(tiny_model_dir, src, out)) == 0
    whole = read_jsonl(out)
    text = out.read_text()
    cut = text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:15]  # the last line half written
    out.write_text(cut)
    capsys.readouterr()
    assert main(batch_args(tiny_model_dir, src, out)) == 0
    err = capsys.readouterr().err
    assert "1 rows written" in err and "5 already done" in err
    assert sorted(map(json.dumps, read_jsonl(out))) == sorted(map(json.dumps, whole))


def test_rows_already_in_the_output_are_skipped(tiny_model_dir, tmp_path, capsys):
    rows = make_rows("generate", 8)
    src = write_jsonl(tmp_path / "in.jsonl", rows[:5])
    out = tmp_path / "out.jsonl"
    assert main(batch_args(tiny_model_dir, src, out)) == 0
    write_jsonl(src, rows)  # three new rows
    capsys.readouterr()
    assert main(batch_args(tiny_model_dir, src, out)) == 0
    err = capsys.readouterr().err
    assert "3 rows written" in err and "5 already done" in err
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(r["id"] for r in rows)
