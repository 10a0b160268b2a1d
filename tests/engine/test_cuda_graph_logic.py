"""CUDA-graph decode's logic without a GPU (engine/cuda_graphs.py): the captured sizes, padding a batch to the
next one, and the static input buffers. The same buffers also run eagerly (no capture), which is checked here
against the engine's flat step: same tokens, same logits."""

from __future__ import annotations

import pytest
import torch

from qwick import LLM, SamplingParams
from qwick.engine.cuda_graphs import DecodeGraphs, DecodeInputs, capture_sizes, padded_size


@pytest.mark.parametrize(("max_num_seqs", "sizes"), [
    (1, [1]), (3, [1, 2, 3]), (8, [1, 2, 4, 8]), (20, [1, 2, 4, 8, 16, 20]),
    (64, [1, 2, 4, 8, 16, 32, 48, 64]), (256, [1, 2, 4, 8, *range(16, 257, 16)]),
])
def test_capture_sizes_are_powers_of_two_then_every_16(max_num_seqs, sizes):
    assert capture_sizes(max_num_seqs) == sizes


def test_a_batch_pads_to_the_next_captured_size():
    sizes = capture_sizes(64)
    assert [padded_size(n, sizes) for n in (1, 2, 3, 5, 8, 9, 16, 17, 33, 64)] == [1, 2, 4, 8, 8, 16, 16, 32, 48, 64]
    assert padded_size(65, sizes) is None  # past the largest graph: eager


def test_fill_copies_the_rows_and_pads_the_rest():
    inputs = DecodeInputs.allocate(8, 6, torch.device("cpu"))
    inputs.block_tables.fill_(99)  # stale values from an earlier step
    tables = [[7, 3], [5]]
    inputs.fill([11, 12], [20, 3], tables, block_size=16, size=4, scratch_slot=1000)
    assert inputs.input_ids[:4].tolist() == [11, 12, 0, 0]
    assert inputs.positions[:4].tolist() == [20, 3, 0, 0]
    assert inputs.slot_mapping[:4].tolist() == [3 * 16 + 4, 5 * 16 + 3, 1000, 1000]  # padding: the scratch slot
    assert inputs.context_lens[:4].tolist() == [21, 4, 1, 1]
    assert inputs.block_tables[:4, :2].tolist() == [[7, 3], [5, 0], [0, 0], [0, 0]]
    assert (inputs.block_tables[:, 2:] == 99).all()  # past every row's blocks: not rewritten, never read
    meta = inputs.metadata(4)
    assert meta.num_paged == 4 and meta.long == [] and meta.block_tables.shape == (4, 6)
    assert meta.slot_mapping.data_ptr() == inputs.slot_mapping.data_ptr()  # views: a graph sees each fill


def test_a_table_wider_than_max_model_len_is_refused():
    inputs = DecodeInputs.allocate(2, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="exceeds the captured width"):
        inputs.fill([1], [40], [[1, 2, 3]], block_size=16, size=1, scratch_slot=0)


PROMPTS = [[(7 * i + j) % 5000 + 100 for j in range(n)] for i, n in enumerate([3, 40, 17, 90, 1])]


@pytest.fixture(scope="module")
def llm(tiny_model_dir) -> LLM:
    built = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256, max_num_seqs=6,
                skip_tokenizer_init=True)
    if not built.engine.runner.backend.supports_flat_step:
        pytest.skip("needs a backend with flat steps (qwick's CPU ops here)")
    return built


def test_static_buffer_decode_matches_the_flat_step(llm):
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    eager = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    runner = llm.engine.runner
    runner.graphs = DecodeGraphs(llm.model, runner.cache, 6, llm.max_model_len, runner.device)
    calls = []
    run = runner.graphs.run
    runner.graphs.run = lambda seqs: calls.append(len(seqs)) or run(seqs)
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, params)] == eager
    assert calls and max(calls) == len(PROMPTS)  # decode steps went through the static buffers, padded to 6
    runner.graphs = None


def test_static_buffer_logits_equal_the_flat_step_logits(llm):
    runner = llm.engine.runner
    engine = llm.engine
    for i, prompt in enumerate(PROMPTS[:3]):
        engine.add_request(str(i), prompt, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    while engine.scheduler.waiting or any(not s.output_ids for r in engine.requests.values() for s in r.sequences):
        engine.step()  # until every prompt is prefilled and has its first token
    seqs = [s for r in engine.requests.values() for s in r.sequences]
    cached = [s.num_cached for s in seqs]
    _, want = runner.flat_step([], seqs)
    want = want.clone()
    for seq, n in zip(seqs, cached, strict=True):
        seq.num_cached = n  # the same decode again: it rewrites the same slots
    graphs = DecodeGraphs(llm.model, runner.cache, 6, llm.max_model_len, runner.device)
    got = graphs.run(seqs)
    assert got.shape == want.shape == (3, llm.model.config.vocab_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for i in range(3):
        engine.abort(str(i))


def test_serve_flags_reach_the_engine_and_are_named_no_ops_on_a_cpu():
    from qwick.cli import build_parser
    from qwick.engine.args import EngineArgs
    from qwick.server.vllm_flags import check_vllm_args

    args = build_parser().parse_args(["serve", "m", "--device", "cpu", "--enforce-eager",
                                      "--gpu-memory-utilization", "0.5"])
    options = EngineArgs.from_cli_args(args)
    assert options.enforce_eager and options.gpu_memory_utilization == 0.5
    noops = [n.split(" ", 1)[0] for n in check_vllm_args(args)]
    assert "--enforce-eager" in noops and "--gpu-memory-utilization" in noops
