"""Bad input: malformed lines go to the errors file (with their line numbers) and the run goes on; bad paths,
flags and files fail with one clear line and exit 2 before any model loads."""

from __future__ import annotations

import builtins

import pytest

from batchkit import make_rows, read_jsonl, write_jsonl
from qwick.cli import main


def run(capsys, model, src, out, *extra):
    code = main(["batch", str(model), "--input", str(src), "--output", str(out), "--dtype", "float32",
                 "--device", "cpu", "--max-model-len", "256", *map(str, extra)])
    return code, capsys.readouterr().err


def test_malformed_lines_go_to_the_errors_file_and_the_run_goes_on(tiny_model_dir, tmp_path, capsys):
    good = make_rows("moderate", 5)
    lines = [good[0], "{not json", good[1], "[1, 2]", "", good[2], '{"id": "x", "txt": "no text"}', '"a string"',
             {"id": "r0", "text": "the same id again"}, {"id": [1], "text": "a list id"}, good[3], good[4]]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    (tmp_path / "in.jsonl").write_bytes((tmp_path / "in.jsonl").read_bytes() + b"\xff\xfe bad utf-8\n")
    code, err = run(capsys, tiny_model_dir, src, tmp_path / "out.jsonl", "--task", "moderate")
    assert code == 1  # finished, with errors
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.jsonl")) == ["r0", "r1", "r2", "r3", "r4"]
    errors = {e["line"]: e for e in read_jsonl(tmp_path / "out.errors.jsonl")}
    assert sorted(errors) == [2, 4, 7, 8, 9, 10, 13]
    assert errors[2]["error"].startswith("line 2 is not JSON") and errors[2]["input"] == "{not json"
    assert errors[4]["error"] == "line 4 is a JSON list, not an object"
    assert errors[7] == {"line": 7, "id": "x", "error": "line 7: 'text' must be a string (it is missing)"}
    assert errors[8]["error"] == "line 8 is a JSON str, not an object"
    assert "id \"r0\" appears again" in errors[9]["error"]
    assert "'id' must be a string or an integer" in errors[10]["error"]
    assert "not UTF-8" in errors[13]["error"]
    assert "7 errors in" in err


def test_more_errors_than_allowed_stops_the_run(tiny_model_dir, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 0, "text": "fine"}] + [{"id": i} for i in range(1, 20)])
    code, err = run(capsys, tiny_model_dir, src, tmp_path / "out.jsonl", "--task", "moderate", "--max-errors", "3")
    assert code == 2
    assert "qwick: error: more than --max-errors 3 rows failed" in err
    assert len(read_jsonl(tmp_path / "out.errors.jsonl")) == 4


def test_a_row_the_engine_rejects_is_an_error_not_a_crash(tiny_model_dir, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi"}, {"id": 2, "prompt": "word " * 400}])
    code, _ = run(capsys, tiny_model_dir, src, tmp_path / "out.jsonl", "--task", "generate", "--max-tokens", "2")
    assert code == 1
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [1]
    (error,) = read_jsonl(tmp_path / "out.errors.jsonl")
    assert error["id"] == 2 and error["line"] == 2 and "256" in error["error"]


@pytest.mark.parametrize("content, message", [
    ('[{"text": "a"}, {"text": "b"}]\n', "is not JSONL: line 1 is not a JSON object"),
    ("just some text\n", "is not JSONL: line 1 is not a JSON object"),
    ("PAR1\x00\x00binary", "is a Parquet file: name it *.parquet"),
    ("\x00\x01\x02", "is not JSONL (binary data)"),
])
def test_an_input_that_is_not_jsonl_is_refused(tmp_path, capsys, content, message):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    code, err = run(capsys, tmp_path / "no-model", src, tmp_path / "out.jsonl", "--task", "moderate")
    assert code == 2 and message in err and err.startswith("qwick: error: --input")


def test_bad_paths_and_flags_fail_before_the_model_loads(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", make_rows("moderate", 2))
    model = tmp_path / "no-model"  # never loaded: every case fails first
    cases = [
        ((src, tmp_path, "--task", "moderate"), "--output " + str(tmp_path) + " is a folder"),
        ((tmp_path / "missing.jsonl", tmp_path / "o.jsonl", "--task", "moderate"), "no such file"),
        ((tmp_path, tmp_path / "o.jsonl", "--task", "moderate"), "is a folder: pass a JSONL or Parquet file"),
        ((src, src, "--task", "moderate"), "is the input file"),
        ((src, tmp_path / "nope" / "o.jsonl", "--task", "moderate"), "does not exist"),
        ((src, tmp_path / "o.jsonl", "--task", "extract"), "--task extract needs a gate named 'extract'"),
        ((src, tmp_path / "o.jsonl", "--task", "moderate", "--gate", "rewrite"),
         "gate 'rewrite' is a rewrite gate; --task moderate needs a moderate gate"),
        ((src, tmp_path / "o.jsonl", "--task", "embed", "--gate", "x"), "--gate applies to --task"),
        ((src, tmp_path / "o.jsonl", "--task", "moderate", "--labels", "a,b"), "--labels applies to --task classify"),
        ((src, tmp_path / "o.jsonl", "--task", "moderate", "--gates", tmp_path / "g.yaml"), "no such file"),
        ((src, tmp_path / "o.jsonl", "--task", "moderate", "--max-errors", "-2"), "--max-errors must be >= 0"),
        ((src, tmp_path / "o.jsonl", "--task", "moderate", "--replicas", "2"), "--address and --replicas need --ray"),
    ]
    for args, message in cases:
        code, err = run(capsys, model, *args)
        assert code == 2, (args, err)
        assert message in err and err.startswith("qwick: error: ") and err.count("\n") == 1, (args, err)


def test_ray_not_installed_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    src = write_jsonl(tmp_path / "in.jsonl", make_rows("moderate", 2))
    code, err = run(capsys, tmp_path / "m", src, tmp_path / "o.jsonl", "--task", "moderate", "--ray")
    assert code == 2 and err == "qwick: error: --ray needs Ray: pip install qwick[ray]\n"


def test_an_unreachable_ray_address_fails_within_seconds(tmp_path, capsys):
    pytest.importorskip("ray")
    import time

    src = write_jsonl(tmp_path / "in.jsonl", make_rows("moderate", 2))
    start = time.monotonic()
    code, err = run(capsys, tmp_path / "m", src, tmp_path / "o.jsonl", "--task", "moderate", "--ray",
                    "--address", "127.0.0.1:9")  # the discard port: nothing listens
    assert code == 2 and "--address 127.0.0.1:9: cannot reach a Ray cluster there" in err
    assert time.monotonic() - start < 10


def test_parquet_in_and_out(tiny_model_dir, tmp_path, capsys):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = make_rows("embed", 6)
    pq.write_table(pyarrow.Table.from_pylist(rows), str(tmp_path / "in.parquet"))
    code, _ = run(capsys, tiny_model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", "--task", "embed",
                  "--dimensions", "8")
    assert code == 0
    out = pq.read_table(str(tmp_path / "out.parquet")).to_pylist()
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)
    assert all(len(r["embedding"]) == 8 for r in out)
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()
