"""`qwick index build | stats | search` and `qwick ask` end to end, errors as one `qwick: error:` line."""

from __future__ import annotations

import json

from ragkit import rare, write_corpus

from qwick.cli import main

MODEL_FLAGS = ["--dtype", "float32", "--device", "cpu", "--max-model-len", "1024"]


def test_build_stats_search_and_ask(tmp_path, tiny_model_dir, capsys):
    docs = write_corpus(tmp_path / "docs", 8)
    index = str(tmp_path / "i.sqlite")
    assert main(["index", "build", index, "--docs", str(docs), "--model", str(tiny_model_dir),
                 "--chunk-tokens", "48", "--overlap", "8", *MODEL_FLAGS]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 8 and "chunks/s" in err  # the progress bar, on stderr
    assert main(["index", "stats", index]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 8 and stats["embedding_model"] == str(tiny_model_dir)
    assert main(["index", "search", index, f"{rare(5)}", "--mode", "bm25", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["source"].endswith("f05.txt")
    assert main(["ask", str(tiny_model_dir), "--index", index, f"what is {rare(5)}?", "--json", "--top-k", "2",
                 "--max-tokens", "8", *MODEL_FLAGS]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["retrieved"]) == 2
    assert all(c["id"] in {h["id"] for h in answer["retrieved"]} for c in answer["citations"])


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["index", "stats", str(tmp_path / "missing.sqlite")]) == 2
    assert "qwick: error: index" in capsys.readouterr().err
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.txt").write_bytes(b"\xff\xfe\x00bad")
    assert main(["index", "build", str(tmp_path / "i.sqlite"), "--docs", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwick: error:") and "x.txt" in err and not (tmp_path / "i.sqlite").exists()
    assert main(["index", "build", str(tmp_path / "i.sqlite"), "--docs", str(tmp_path), "--overlap", "500"]) == 2
    assert "--overlap" in capsys.readouterr().err
