"""`qwick batch` (the runner behind it, and `llm.batch`) over a few hundred rows of each task gives what running
each row through the offline API one at a time gives."""

from __future__ import annotations

import pytest

from batchkit import GREEDY, assert_same_rows, make_rows, one_by_one, read_jsonl, write_jsonl
from qwick.batch.cli import TASK_NAMES
from qwick.batch.job import BatchJob, run_job
from qwick.batch.tasks import TASKS, TaskOptions

ROWS = {"generate": 100, "chat": 50, "moderate": 200, "classify": 200, "rewrite": 64, "extract": 64,
        "score": 100, "embed": 200}
# schema-constrained generation costs seconds per row one at a time on a loaded 2-core machine: the reference
# runs every 8th row of these (the batch still runs them all)
EVERY = {"rewrite": 8, "extract": 8}


def test_the_cli_lists_every_task():
    assert tuple(TASKS) == TASK_NAMES


@pytest.mark.parametrize("task", list(ROWS))
def test_a_batch_file_equals_the_rows_one_by_one(llm, gates_file, tmp_path, task):
    rows = make_rows(task, ROWS[task])
    gate = "city" if task == "extract" else None
    options = TaskOptions(gate=gate, sampling=GREEDY,
                          chat_template_kwargs={"enable_thinking": False} if task == "chat" else None)
    job = BatchJob(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", task, options,
                   gates_file=gates_file, progress=False)
    summary = run_job(job, llm)
    assert (summary.written, summary.errors, summary.skipped) == (len(rows), 0, 0)
    got = {row["id"]: row for row in read_jsonl(tmp_path / "out.jsonl")}
    assert got.keys() == {row["id"] for row in rows}
    checked = rows[:: EVERY.get(task, 1)]
    expected = one_by_one(llm, task, checked, gates_file, gate)
    got = {row["id"]: got[row["id"]] for row in checked}
    if task == "embed":  # the batch line also counts the prompt's tokens
        for row in got.values():
            assert row.pop("prompt_tokens") > 0
    assert_same_rows(got, expected)


def test_llm_batch_yields_every_row_once_with_its_id(llm):
    rows = [{"text": f"text {i}"} for i in range(50)]
    out = list(llm.batch(rows, "classify", labels=["question", "purchase"]))
    assert sorted(r["id"] for r in out) == list(range(1, 51))  # no id: the 1-based position
    alone = {i + 1: llm.classify(row["text"], ["question", "purchase"]) for i, row in enumerate(rows)}
    for row in out:
        assert row["label"] == alone[row["id"]].label
        assert row["scores"]["question"] == pytest.approx(alone[row["id"]].scores["question"], abs=1e-6)


def test_rows_run_concurrently_not_one_at_a_time(llm, monkeypatch):
    """The engine sees many rows in the same steps: the largest batch it ran is far above one."""
    seen = []
    step = llm.engine.step

    def counting_step():
        seen.append(len(llm.engine.scheduler.running))
        return step()

    monkeypatch.setattr(llm.engine, "step", counting_step)
    list(llm.batch(make_rows("generate", 40), "generate", sampling=GREEDY))
    assert max(seen) >= 20


def test_a_bad_row_in_llm_batch_is_an_error_row_and_the_rest_run(llm):
    out = {r["id"]: r for r in llm.batch([{"id": "a", "text": "ok"}, {"id": "b", "prompt": "x"}, "text"],
                                         "moderate")}
    assert "allow" in out["a"]
    assert out["b"]["error"] == "line 2: 'text' must be a string (it is missing)"
    assert out[3]["error"] == "row 3 is a str, not a dict"
