"""Property-based fuzzing of the server from its own /openapi.json (schemathesis): no request the schema admits,
or a mutation of one, may get a 5xx; every error is a documented status. Bounded: a few examples per operation
against a tiny model with a 64-token context (about a minute on 2 CPU cores,
capped at BUDGET_S). Needs schemathesis (the test extra); skipped without it."""

from __future__ import annotations

import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402
from serverkit import MODEL, serving, tiny_llm  # noqa: E402

from qwick.server import build_app  # noqa: E402
from qwick.server.app import start_llm  # noqa: E402
from qwick.server.serving import ServerLimits  # noqa: E402

EXAMPLES = 6  # per operation
BUDGET_S = 150.0  # operations not reached by then are skipped: the whole run stays under ~3 minutes


@pytest.fixture(scope="module")
def started() -> float:
    return time.monotonic()


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir):
    llm, engine = start_llm(lambda: tiny_llm(tiny_model_dir, max_model_len=64, max_num_seqs=4))
    app = build_app(llm, MODEL, client=engine, limits=ServerLimits(max_messages=8, max_prompts=4))
    with serving(app, llm) as running:
        api = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
        api.config.generation.update(modes=list(schemathesis.GenerationMode))  # valid bodies and mutated ones
        yield api


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_request_is_a_server_error(case, started):
    if time.monotonic() - started > BUDGET_S:
        pytest.skip(f"past the {BUDGET_S:.0f} s budget of this fuzzing run")
    response = case.call(timeout=30)
    assert response.status_code < 500, (case.as_curl_command(), response.text)
    case.validate_response(response, checks=[status_code_conformance])
