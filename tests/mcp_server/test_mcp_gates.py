"""qwick as an MCP server, driven by the `mcp` package's client: `qwick serve --mcp-path /mcp` (one server for
the module, compared with its own HTTP gate endpoints and ledger) and `qwick mcp` over stdio."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from serverkit import serving, tiny_llm

from qwick.gates.ledger import Ledger
from qwick.server import build_app
from qwick.server.app import start_llm
from qwick.server.routes.gates import GateOptions

TOOLS = {"moderate", "classify", "rewrite", "extract", "score", "embed"}
TEXTS = ["how do I bake bread?", "I will hurt you"]


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    ledger_path = tmp_path_factory.mktemp("ledger") / "ledger.db"
    llm, engine = start_llm(lambda: tiny_llm(tiny_model_dir))
    app = build_app(llm, "tiny", client=engine, gates=GateOptions(ledger=Ledger(str(ledger_path))), mcp_path="/mcp")
    with serving(app, llm) as server:
        yield server, ledger_path


def mcp(target, work, timeout: float = 120):
    """Run `work(client)` against an MCP server (a URL or stdio parameters) with the mcp client."""
    from mcp import Client

    async def main():
        async with Client(target, read_timeout_seconds=timeout) as client:
            return await work(client)

    return asyncio.run(main())


async def list_tools(client):
    return {t.name: t for t in (await client.list_tools()).tools}


def test_tools_are_listed_with_input_and_output_schemas(served):
    server, _ = served
    tools = mcp(f"{server.url}/mcp", list_tools)
    assert set(tools) == TOOLS
    assert tools["moderate"].input_schema["required"] == ["text"]
    assert tools["extract"].input_schema["properties"]["schema"]["anyOf"][0]["type"] == "object"
    assert tools["score"].input_schema["required"] == ["query", "items"]
    assert {"allow", "reason", "gate", "scores", "request_id"} <= set(tools["moderate"].output_schema["properties"])


def test_moderate_over_mcp_equals_v1_moderate_and_is_in_the_same_ledger(served):
    server, ledger_path = served

    async def work(client):
        return [await client.call_tool("moderate", {"text": t}) for t in TEXTS]

    results = mcp(f"{server.url}/mcp", work)
    for text, result in zip(TEXTS, results, strict=True):
        http = server.post("/v1/moderate", json={"text": text}).json()
        assert not result.is_error
        got = result.structured_content
        assert (got["allow"], got["reason"], got["gate"]) == (http["allow"], http["reason"], http["gate"])
        assert got["scores"] == pytest.approx(http["scores"], abs=1e-6)
    time.sleep(0.5)  # the ledger writes on its own thread
    with sqlite3.connect(ledger_path) as conn:
        ids = {row[0] for row in conn.execute("SELECT request_id FROM decisions WHERE kind = 'moderate'")}
    assert {r.structured_content["request_id"] for r in results} <= ids


def test_extract_against_a_schema_given_in_the_call(served):
    server, _ = served
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"],
              "additionalProperties": False}

    async def work(client):
        return await client.call_tool("extract", {"text": "I live in Paris", "schema": schema})

    result = mcp(f"{server.url}/mcp", work)
    got = result.structured_content
    assert not result.is_error and got["gate"] == "extract"
    if got["schema_valid"]:  # a random model may run out of tokens; then data is null, never invalid data
        assert set(got["data"]) == {"city"} and isinstance(got["data"]["city"], str)
    else:
        assert got["data"] is None


def test_score_classify_and_embed(served):
    server, _ = served

    async def work(client):
        return (await client.call_tool("score", {"query": "bread", "items": ["flour", "cars"]}),
                await client.call_tool("classify", {"text": "refund please", "labels": ["refund", "other"]}),
                await client.call_tool("embed", {"texts": ["a", "b"], "dimensions": 8}))

    score, classify, embed = mcp(f"{server.url}/mcp", work)
    http = server.post("/v1/score", json={"text_1": "bread", "text_2": ["flour", "cars"]}).json()
    assert score.structured_content["scores"] == pytest.approx([d["score"] for d in http["data"]], abs=1e-6)
    assert classify.structured_content["label"] in ("refund", "other")
    assert sum(classify.structured_content["scores"].values()) == pytest.approx(1.0)
    vectors = embed.structured_content["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == 8 and embed.structured_content["dimensions"] == 8


@pytest.mark.parametrize(("tool", "arguments", "expected"), [
    ("moderate", {"text": "x", "gate": "nope"}, "no gate named 'nope'"),
    ("classify", {"text": "x", "labels": ["only"]}, "labels must list at least two"),
    ("extract", {"text": "x"}, "give either 'schema'"),
    ("extract", {"text": "x", "schema": {"type": "object", "properties": {"a": {"type": "strng"}}}}, "strng"),
    ("score", {"query": "q", "items": []}, "items"),
    ("embed", {"texts": ["a"], "dimensions": 0}, "dimensions"),
    ("moderate", {}, "text"),
])
def test_bad_calls_are_tool_errors_naming_the_problem(served, tool, arguments, expected):
    server, _ = served

    async def work(client):
        return await client.call_tool(tool, arguments)

    result = mcp(f"{server.url}/mcp", work)
    assert result.is_error and expected in result.content[0].text
    assert server.get("/health").status_code == 200


def test_qwick_mcp_over_stdio(tiny_model_dir, served):
    from mcp import StdioServerParameters

    server, _ = served
    params = StdioServerParameters(command=sys.executable, args=[
        "-m", "qwick.cli", "mcp", str(tiny_model_dir), "--dtype", "float32", "--max-model-len", "1024", "--seed", "0"],
        env={k: os.environ[k] for k in ("PYTHONPATH", "TORCH_EXTENSIONS_DIR", "QWICK_KERNELS") if k in os.environ})

    async def work(client):
        tools = await list_tools(client)
        return tools, await client.call_tool("moderate", {"text": TEXTS[1]})

    tools, result = mcp(params, work, timeout=600)  # the first answer waits for the model to load
    assert set(tools) == TOOLS and tools["classify"].input_schema["required"] == ["text"]
    http = server.post("/v1/moderate", json={"text": TEXTS[1]}).json()
    got = result.structured_content
    assert (got["allow"], got["reason"], got["gate"]) == (http["allow"], http["reason"], http["gate"])
