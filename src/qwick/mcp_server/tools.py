"""`gate_mcp_server(service)`: an MCPServer whose tools are the gates, over a GateService (`qwick.gates`), the
same service and ledger the HTTP gate endpoints use. Tool errors (an unknown gate, bad labels, a bad schema)
come back as is_error results naming the problem."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from qwick.gates.decisions import Decision
from qwick.gates.kinds import GATE_KINDS
from qwick.gates.service import GateNotFoundError, GateService
from qwick.gates.spec import GateSpec
from qwick.mcp_server.results import (
    ClassifyResult,
    EmbedResult,
    ExtractResult,
    ModerateResult,
    RewriteResult,
    ScoreResult,
)

R = TypeVar("R")
EXTRACT_INSTRUCTION = ("Extract the requested fields from the user's text. Reply with JSON only, matching the "
                       "schema; use null where the text does not say.")
INSTRUCTIONS = ("Cheap, local decisions by a small model: moderation, classification, query rewriting, JSON "
                "extraction, relevance scores and embeddings. Label probabilities are exact; every decision is "
                "recorded in the gate ledger when the server keeps one.")

Text = Annotated[str, Field(description="the text to decide on")]
GateName = Annotated[str | None, Field(description="a gate from the server's gates file (default: the built-in)")]


def gate_mcp_server(service: GateService, name: str = "qwick-gates") -> MCPServer:
    """The MCP server over `service`."""
    server = MCPServer(name, instructions=INSTRUCTIONS)

    @server.tool(description="Content safety: allow or deny a text, with the category and exact probabilities.")
    async def moderate(text: Text, gate: GateName = None) -> ModerateResult:
        decision = await _decide(lambda: service.moderate(text, gate))
        return ModerateResult(**_fields("moderate", decision, text))

    @server.tool(description="Classify a text into one of the labels (ad-hoc labels, or the gate's own).")
    async def classify(text: Text, labels: Annotated[list[str] | None, Field(
            description="at least two labels (default: the gate's)")] = None, gate: GateName = None) -> ClassifyResult:
        decision = await _decide(lambda: service.classify(text, labels, gate))
        return ClassifyResult(**_fields("classify", decision, text))

    @server.tool(description="Rewrite a search query so a search engine finds what the user wants.")
    async def rewrite(text: Text, gate: GateName = None) -> RewriteResult:
        decision = await _decide(lambda: service.rewrite(text, gate))
        return RewriteResult(**_fields("rewrite", decision, text))

    @server.tool(description="Extract JSON from a text, constrained to the JSON schema given in the call (or an "
                             "extract gate's schema).")
    async def extract(text: Text, schema: Annotated[dict[str, Any] | None, Field(
            description="the JSON schema of the answer (an object schema)")] = None,
            instruction: Annotated[str | None, Field(description="what to extract (optional)")] = None,
            gate: GateName = None) -> ExtractResult:
        if (schema is None) == (gate is None):
            raise ToolError("give either 'schema' (a JSON schema of the answer) or 'gate' (an extract gate)")
        if schema is not None:
            spec = GateSpec("extract", "extract", instruction or EXTRACT_INSTRUCTION, schema=schema)
            decision = await _decide(lambda: service.run(spec, {"text": text}))
        else:
            decision = await _decide(lambda: service.run(service.gate(gate, ("extract",)), {"text": text}))
        return ExtractResult(**_fields("extract", decision, text))

    @server.tool(description="Relevance of each item to the query: P(yes) in Qwen3-Reranker's format.")
    async def score(query: Annotated[str, Field(description="the query")],
                    items: Annotated[list[str], Field(description="the documents to score", min_length=1)],
                    instruction: Annotated[str | None, Field(description="the task (optional)")] = None,
                    gate: GateName = None) -> ScoreResult:
        decision = await _decide(lambda: service.score(query, items, gate, instruction=instruction))
        return ScoreResult(**_fields("score", decision, query))

    @server.tool(description="Embeddings of texts: last-token pooled, L2-normalised (Qwen3-Embedding).")
    async def embed(texts: Annotated[list[str], Field(description="the texts", min_length=1)],
                    dimensions: Annotated[int | None, Field(description="cut each vector to this size (MRL)",
                                                            ge=1)] = None) -> EmbedResult:
        vectors, tokens = await _decide(lambda: service.embed(list(texts), dimensions))
        return EmbedResult(embeddings=vectors, dimensions=len(vectors[0]), prompt_tokens=tokens)

    return server


def _fields(kind: str, decision: Decision, text: str) -> dict[str, Any]:
    """The HTTP endpoint's fields for this decision (`gate_json` in server/routes/gates.py)."""
    return {**GATE_KINDS[kind].response(decision, {"text": text}), "gate": decision.gate,
            "timed_out": decision.timed_out, "latency_ms": round(decision.latency_ms, 3),
            "request_id": decision.request_id}


async def _decide(call: Callable[[], Awaitable[R]]) -> R:
    """Run a gate call; what the caller got wrong becomes a tool error naming it."""
    try:
        return await call()
    except GateNotFoundError as exc:
        raise ToolError(str(exc)) from None
    except ValueError as exc:  # GateError included: names the gate and the field
        raise ToolError(str(exc)) from None
