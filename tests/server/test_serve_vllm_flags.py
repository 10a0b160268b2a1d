"""`qwick serve` takes a `vllm serve` launch script's flags: each applies, is a logged no-op, or is refused."""

from __future__ import annotations

import re
import signal

import pytest
from servecli import qwick_serve
from serverkit import TIMEOUT, tiny_llm

from qwick.cli import build_parser, main
from qwick.engine.args import EngineArgs
from qwick.server.startup import describe
from qwick.server.vllm_flags import check_vllm_args, configure_llm

TEMPLATE = "{% for m in messages %}<<{{ m.role }}|{{ m.content }}>>{% endfor %}{% if add_generation_prompt %}GO{% endif %}"


def parse(*flags: str):
    return build_parser().parse_args(["serve", "some-model", *flags])


@pytest.mark.parametrize(("flags", "message"), [
    (["--tool-call-parser", "mistral"], "--tool-call-parser 'mistral' does not apply"),
    (["--reasoning-parser", "granite"], "--reasoning-parser 'granite' does not apply"),
    (["--gpu-memory-utilization", "1.5"], "must be in (0, 1]"),
    (["--hf-overrides", '{"num_hidden_layers": 2}'], "--hf-overrides is not supported"),
    (["--rope-scaling", '{"rope_type": "yarn", "factor": 4}'], "--rope-scaling is not supported"),
    (["--rope-scaling", "yarn"], "not valid JSON"),
    (["--generation-config", "/no/such/folder"], "--generation-config must be auto, vllm or a folder"),
    (["--chat-template", "/no/such/template.jinja"], "no such file"),
])
def test_flags_that_cannot_apply_are_refused_before_the_model_loads(flags, message, capsys, tmp_path):
    assert main(["serve", str(tmp_path / "no-model-here"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwick: error: ") and message in err and "Traceback" not in err


def test_no_op_flags_are_named_and_applying_flags_are_not():
    noops = check_vllm_args(parse("--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                                  "--reasoning-parser", "qwen3", "--gpu-memory-utilization", "0.9",
                                  "--hf-overrides", "{}", "--max-num-batched-tokens", "256",
                                  "--disable-log-requests"))
    assert [n.split(" ", 1)[0] for n in noops] == ["--enable-auto-tool-choice", "--tool-call-parser",
                                                   "--reasoning-parser", "--gpu-memory-utilization", "--hf-overrides"]
    assert check_vllm_args(parse()) == []


def test_engine_flags_reach_the_llm():
    args = parse("--max-num-batched-tokens", "256", "--no-enable-prefix-caching", "--kv-cache-memory-bytes", "64MiB")
    options = EngineArgs.from_cli_args(args)
    assert (options.max_num_batched_tokens, options.enable_prefix_caching) == (256, False)
    assert options.kv_cache_memory_bytes == 64 * 2**20
    assert parse("--kv-cache-memory-bytes", "2e9").kv_cache_memory_bytes == 2_000_000_000
    with pytest.raises(SystemExit):
        parse("--kv-cache-memory-bytes", "lots")


def test_chat_template_and_generation_config_apply_to_the_llm(tiny_model_dir, tmp_path):
    llm = tiny_llm(tiny_model_dir)
    assert llm.generation_defaults.temperature != 1.0 or llm.generation_defaults.top_k != 0  # the model has some
    eos = llm.generation_defaults.eos_token_ids
    template = tmp_path / "template.jinja"
    template.write_text(TEMPLATE)
    configure_llm(llm, parse("--chat-template", str(template), "--generation-config", "vllm"))
    rendered = llm.get_tokenizer().apply_chat_template([{"role": "user", "content": "hi"}],
                                                        add_generation_prompt=True)
    assert rendered == "<<user|hi>>GO"
    defaults = llm.engine.defaults
    assert (defaults.temperature, defaults.top_p, defaults.top_k, defaults.eos_token_ids) == (1.0, 1.0, 0, eos)
    with pytest.raises(ValueError, match="does not render a chat"):
        configure_llm(llm, parse("--chat-template", "{{ messages[0].nope.deeper }}"))


def test_describe_names_model_dtype_device_kv_cache_and_kernels(tiny_model_dir):
    llm = tiny_llm(tiny_model_dir, kv_cache_memory_bytes=8 * 2**20)
    line = describe(llm)
    cache = llm.engine.cache
    assert f"KV cache {cache.num_blocks * cache.block_size} tokens / {cache.nbytes()} bytes" in line
    for part in ("dtype float32", "device cpu", f"max_model_len {llm.max_model_len}", "CPU kernels: attention"):
        assert part in line


def test_serve_logs_one_noop_line_and_the_startup_line(tiny_model_dir, tmp_path):
    template = tmp_path / "template.jinja"
    template.write_text(TEMPLATE)
    with qwick_serve(tiny_model_dir, "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                     "--reasoning-parser", "qwen3", "--chat-template", str(template), "--gpu-memory-utilization",
                     "0.9", "--max-num-batched-tokens", "128", "--no-enable-prefix-caching",
                     "--kv-cache-memory-bytes", "16MiB", "--generation-config", "vllm", "--disable-log-requests",
                     "--uvicorn-log-level", "warning", "--log-level", "info") as served:
        import httpx

        tokens = httpx.post(f"{served.url}/tokenize", timeout=TIMEOUT,
                            json={"messages": [{"role": "user", "content": "hi"}]}).json()["tokens"]
        detok = httpx.post(f"{served.url}/detokenize", json={"tokens": tokens}, timeout=TIMEOUT).json()
        assert detok["prompt"] == "<<user|hi>>GO"
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=TIMEOUT) == 0
        out = served.output()
    noop_lines = [line for line in out.splitlines() if "vLLM flags that change nothing here" in line]
    assert len(noop_lines) == 1
    listed = [item.split(" (", 1)[0] for item in noop_lines[0].split("nothing here: ", 1)[1].split("; ")]
    assert listed == ["--enable-auto-tool-choice", "--tool-call-parser hermes", "--reasoning-parser qwen3",
                      "--gpu-memory-utilization 0.9"]
    startup = next(line for line in out.splitlines() if "serving: model" in line)
    match = re.search(r"KV cache (\d+) tokens / (\d+) bytes", startup)
    assert match and int(match.group(1)) > 0 and 0 < int(match.group(2)) < 17 * 2**20  # + a scratch slot
    assert "prefix caching off" in startup and "max_num_batched_tokens 128" in startup
    assert "POST /tokenize ->" not in out  # --disable-log-requests
    assert "Uvicorn running" not in out  # --uvicorn-log-level warning
