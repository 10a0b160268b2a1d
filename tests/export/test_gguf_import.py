"""qwick loading the files it exported: exact logits for f32, measured closeness for the other types.

Bars on the tiny trained model (quant/trained.py), 32 prompts x 32 greedy steps, measured when written:
f16 max |logit diff| 0.003, bf16 0.022, q8_0 0.058; q4_0 mean KL 1.6e-3 nats and 99.2% greedy agreement.
The caps below leave ~3x headroom on the measured values (README, "Export to GGUF", has the table).
"""

from __future__ import annotations

import pytest
import torch
from trained import load_float32

from qwick.gguf import open_gguf
from qwick.gguf.load import load_gguf
from qwick.quant.accuracy import compare, logits

CPU = torch.device("cpu")


def _prompts(language) -> torch.Tensor:
    return language.sample(32, 8, torch.Generator().manual_seed(1))


def test_f32_file_gives_the_source_logits_exactly(trained, trained_exports):
    folder, language = trained
    reference = load_float32(folder)
    loaded = load_gguf(open_gguf(trained_exports["f32"]), torch.float32, CPU)
    with torch.no_grad():
        assert torch.equal(logits(loaded, _prompts(language)), logits(reference, _prompts(language)))


@pytest.mark.parametrize(("quantization", "max_diff"), [("f16", 0.01), ("bf16", 0.07), ("q8_0", 0.2)])
def test_float_and_q8_files_stay_within_measured_logit_tolerance(trained, trained_exports, quantization, max_diff):
    folder, language = trained
    reference = load_float32(folder)
    loaded = load_gguf(open_gguf(trained_exports[quantization]), torch.float32, CPU)
    with torch.no_grad():
        diff = (logits(loaded, _prompts(language)) - logits(reference, _prompts(language))).abs().max().item()
    assert 0 < diff <= max_diff, f"{quantization}: max |logit diff| {diff}"


def test_q4_0_file_keeps_its_measured_accuracy(trained, trained_exports):
    folder, language = trained
    result = compare(load_float32(folder), load_gguf(open_gguf(trained_exports["q4_0"]), torch.float32, CPU),
                     _prompts(language), 32)
    assert result.kl <= 5e-3 and result.agreement >= 0.97, str(result)


def test_llm_runs_a_gguf_file_like_its_source(tiny_model_dir, tokenizer_export):
    """LLM("x.gguf"): config, weights, tokenizer and chat template all from the file."""
    from qwick import LLM
    from qwick.sampling_params import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=6)
    messages = [{"role": "user", "content": "Hi"}]
    source = LLM(str(tiny_model_dir), dtype="float32", max_model_len=64)
    expected = source.chat([messages], params)[0].outputs[0]
    from_file = LLM(str(tokenizer_export.path), dtype="float32", max_model_len=64)
    got = from_file.chat([messages], params)[0].outputs[0]
    assert got.token_ids == expected.token_ids and got.text == expected.text


def test_qwick_generate_runs_a_gguf_file(tokenizer_export, capsys):
    """`qwick generate x.gguf` (chat and serve build the engine the same way): the file's tokenizer decodes."""
    from qwick import LLM, SamplingParams
    from qwick.cli import main

    path = str(tokenizer_export.path)
    expected = LLM(path, dtype="float32", max_model_len=64).generate(
        "Hello", SamplingParams(max_tokens=4, temperature=0.0))[0].outputs[0].text
    assert main(["generate", path, "Hello", "--max-tokens", "4", "--temperature", "0", "--dtype", "float32",
                 "--max-model-len", "64"]) == 0
    assert capsys.readouterr().out == expected + "\n"
