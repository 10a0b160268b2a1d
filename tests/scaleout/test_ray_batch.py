"""`qwick batch --ray`: Ray Data with two actors (one engine each) writes the same rows as the single-machine
run; `QwickPredictor` in a pipeline of one's own."""

from __future__ import annotations

import pytest

from batchkit import GREEDY, assert_same_rows, make_rows, read_jsonl, write_jsonl
from qwick.batch.job import BatchJob, run_job
from qwick.batch.tasks import TaskOptions
from qwick.cli import main

pytest.importorskip("ray")  # the whole module needs Ray (pip install qwick[ray])


def test_two_actors_write_the_rows_of_the_single_machine_run(ray_cluster, tiny_model_dir, tmp_path, capsys):
    from qwick import LLM

    rows = [*make_rows("classify", 150), "{broken", *make_rows("generate", 3)]  # 1 malformed, 3 repeated ids
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    common = ["batch", str(tiny_model_dir), "--input", str(src), "--task", "classify", "--dtype", "float32",
              "--device", "cpu", "--max-model-len", "256", "--max-num-seqs", "16", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "ray.jsonl"), "--ray", "--replicas", "2",
                 "--batch-size", "32"]) == 1
    llm = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256, max_num_seqs=16)
    job = BatchJob(src, tmp_path / "one.jsonl", "classify", TaskOptions(), progress=False)
    run_job(job, llm)
    on_ray = {r["id"]: r for r in read_jsonl(tmp_path / "ray.jsonl")}
    assert len(on_ray) == 150
    assert_same_rows(on_ray, {r["id"]: r for r in read_jsonl(tmp_path / "one.jsonl")})
    ray_errors = read_jsonl(tmp_path / "ray.errors.jsonl")
    assert sorted(e["line"] for e in ray_errors) == [151, 152, 153, 154]
    assert sorted(ray_errors, key=lambda e: e["line"]) == sorted(read_jsonl(tmp_path / "one.errors.jsonl"),
                                                                 key=lambda e: e["line"])

    # resumed on Ray: nothing left to do but the rows that failed
    capsys.readouterr()
    assert main([*common, "--output", str(tmp_path / "ray.jsonl"), "--ray", "--replicas", "2"]) == 1
    assert len(read_jsonl(tmp_path / "ray.jsonl")) == 150


def test_the_predictor_in_a_pipeline_of_ones_own(ray_cluster, tiny_model_dir):
    from qwick import LLM
    from qwick.ray import QwickPredictor

    prompts = [f"count {i}" for i in range(40)]
    ds = ray_cluster.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(prompts)])
    engine = {"dtype": "float32", "device": "cpu", "max_model_len": 128}
    out = ds.map_batches(QwickPredictor, batch_size=16, concurrency=2, num_cpus=1,
                         fn_constructor_kwargs={"model": str(tiny_model_dir), "task": "generate", "threads": 1,
                                                "options": TaskOptions(sampling=GREEDY), **engine}).take_all()
    assert sorted(r["id"] for r in out) == list(range(40))
    llm = LLM(tiny_model_dir, **engine)
    for row in out:
        assert row["error"] is None
        assert row["text"] == llm.generate(prompts[row["id"]], GREEDY)[0].outputs[0].text
