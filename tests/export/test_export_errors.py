"""Hostile inputs: clear errors naming the thing, and no partial file left behind."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest

from qwick.cli import main
from qwick.export import ExportError, export_gguf
from qwick.gguf import GGUFError, open_gguf


def test_unsupported_type_is_refused_by_name(trained, tmp_path):
    with pytest.raises(ExportError, match=r"'q5_k'.*f32, f16, bf16, q8_0, q4_0"):
        export_gguf(trained[0], tmp_path / "x.gguf", "q5_k", with_tokenizer=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(trained, tmp_path):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(ExportError, match=r"already exists.*--force"):
        export_gguf(trained[0], out, "q8_0", with_tokenizer=False)
    assert out.read_bytes() == b"keep me"
    export_gguf(trained[0], out, "q8_0", with_tokenizer=False, force=True)
    assert open_gguf(out).config.hidden_size == 128


def test_failed_export_leaves_no_partial_file(trained, tmp_path):
    """A source that fails half-way (a tensor of the wrong shape) leaves neither OUT nor a temporary file."""
    broken = tmp_path / "broken"
    shutil.copytree(trained[0], broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "intermediate_size": 320}))
    out = tmp_path / "out" / "x.gguf"
    out.parent.mkdir()
    with pytest.raises(ValueError, match="shape"):
        export_gguf(broken, out, "f16", with_tokenizer=False)
    assert list(out.parent.iterdir()) == []


def test_model_qwick_cannot_load_is_named(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="model_type='llama'"):
        export_gguf(folder, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_missing_tokenizer_is_named(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        export_gguf(trained[0], tmp_path / "x.gguf", "f16")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_gguf_is_a_clear_error(trained_exports, tmp_path, keep):
    data = trained_exports["q8_0"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GGUFError, match=r"cut\.gguf is not a readable GGUF file.*truncated or corrupt"):
        open_gguf(cut)


def test_corrupt_gguf_is_a_clear_error(trained_exports, tmp_path):
    data = bytearray(trained_exports["q8_0"].read_bytes())
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(data[4:]))  # wrong magic
    with pytest.raises(GGUFError, match="not a readable GGUF file"):
        open_gguf(bad)
    data[24:32] = (2**60).to_bytes(8, "little")  # the first key's length: far past the end
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="not a readable GGUF file"):
        open_gguf(bad)


def test_other_architecture_is_named(tmp_path):
    path = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFError, match=r"architecture 'llama' is not supported.*'qwen3'"):
        open_gguf(path)


def test_llm_on_a_gguf_without_tokenizer_says_so(trained_exports):
    from qwick import LLM

    with pytest.raises(GGUFError, match=r"no tokenizer.*skip_tokenizer_init"):
        LLM(str(trained_exports["f16"]), max_model_len=32)
    llm = LLM(str(trained_exports["f16"]), max_model_len=32, skip_tokenizer_init=True, dtype="float32")
    assert llm.model.config.vocab_size == 256 and llm.tokenizer is None


def test_cli_errors_are_one_line_exit_2(trained, trained_exports, tmp_path, capsys):
    assert main(["export", str(trained[0]), str(trained_exports["f32"])]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["export", str(trained[0]), str(tmp_path / "x.bin")]) == 2
    assert "must be a .gguf file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "x.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "cut.gguf"), "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err
