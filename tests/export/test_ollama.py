"""The Ollama Modelfile written next to an export."""

from __future__ import annotations

from qwick.cli import main


def test_modelfile_has_from_template_parameters_and_stops(trained, tmp_path, capsys, monkeypatch):
    from qwick.export import writer

    monkeypatch.setattr(writer.Tokenizer, "from_pretrained", lambda folder: None)  # the trained model has none
    monkeypatch.setattr(writer, "write_vocab", lambda *args: None)
    out = tmp_path / "ollama" / "model.gguf"
    out.parent.mkdir()
    assert main(["export", str(trained[0]), str(out), "--quantization", "q4_0", "--ollama", str(out.parent)]) == 0
    text = (out.parent / "Modelfile").read_text()
    assert text.startswith("FROM ./model.gguf\n")
    assert 'TEMPLATE """' in text and "<tool_call>" in text and "<tool_response>" in text
    assert "<think>" in text and "$.IsThinkSet" in text and ".Tools" in text
    for line in ("PARAMETER temperature 0.6", "PARAMETER top_p 0.95", "PARAMETER top_k 20", "PARAMETER min_p 0",
                 'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"'):
        assert line in text.splitlines()
    assert main(["export", str(trained[0]), str(out), "--ollama", str(out.parent)]) == 2  # exists: --force
    assert "--force" in capsys.readouterr().err
