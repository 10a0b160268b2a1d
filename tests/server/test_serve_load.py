"""Client disconnects abort engine requests; 64 concurrent streams; /metrics with vLLM's names."""

from __future__ import annotations

import asyncio

import httpx
from serverkit import MAX_MODEL_LEN, MODEL, TIMEOUT, wait_until

USER = [{"role": "user", "content": "Tell me a long story."}]
LONG = {"model": MODEL, "messages": USER, "max_tokens": MAX_MODEL_LEN - 64, "ignore_eos": True}
ABORTS = ("qwick:request_success_total", {"finished_reason": "abort"})


def engine_is_idle(server) -> bool:
    engine = server.llm.engine
    return not engine.has_unfinished() and engine.stats().kv_cache_usage == 0.0


def test_disconnect_mid_stream_aborts_the_engine_request(server):
    aborted = server.metric(ABORTS[0], **ABORTS[1])
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**LONG, "stream": True},
                      timeout=TIMEOUT) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # keep it: a collected iterator would close the stream early
        assert '"role":"assistant"' in next(line for line in lines if line.startswith("data: "))
        assert server.metric(ABORTS[0], **ABORTS[1]) == aborted and server.llm.engine.has_unfinished()
    # the client is gone long before ~1000 tokens could be generated
    assert wait_until(lambda: engine_is_idle(server))
    assert wait_until(lambda: server.metric(ABORTS[0], **ABORTS[1]) == aborted + 1)


def test_disconnect_while_waiting_for_a_whole_completion_aborts_it_too(server):
    aborted = server.metric(ABORTS[0], **ABORTS[1])
    try:
        httpx.post(f"{server.url}/v1/chat/completions", json=LONG, timeout=httpx.Timeout(TIMEOUT, read=0.3))
        raise AssertionError("the completion should still be running")
    except httpx.ReadTimeout:
        pass
    assert wait_until(lambda: server.metric(ABORTS[0], **ABORTS[1]) == aborted + 1)
    assert wait_until(lambda: engine_is_idle(server))


def test_64_concurrent_streams_all_finish_with_correct_usage(server, tokenizer):
    def expected_prompt_tokens(i: int) -> int:
        messages = [{"role": "user", "content": f"Request number {i}: say something."}]
        return len(tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True)))

    async def one(aclient, i: int) -> tuple[int, int, str]:
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Request number {i}: say something."}],
            max_tokens=4, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        chunks = [chunk async for chunk in stream]
        finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
        return chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens, finish

    async def main() -> list[tuple[int, int, str]]:
        async with server.async_client() as aclient:
            return await asyncio.gather(*(one(aclient, i) for i in range(64)))

    results = asyncio.run(asyncio.wait_for(main(), 3 * TIMEOUT))
    assert results == [(expected_prompt_tokens(i), 4, "length") for i in range(64)]
    assert wait_until(lambda: engine_is_idle(server))


def test_metrics_use_vllm_names_and_count_what_happened(server, client):
    text = server.get("/metrics").text
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prefix_cache_queries_total",
                 "prefix_cache_hits_total", "prompt_tokens_total", "generation_tokens_total",
                 "time_to_first_token_seconds_bucket", "inter_token_latency_seconds_bucket",
                 "e2e_request_latency_seconds_count"):
        assert f"qwick:{name}{{" in text, name
    generated = server.metric("qwick:generation_tokens_total")
    finished = server.metric("qwick:request_success_total", finished_reason="length")
    e2e = server.metric("qwick:e2e_request_latency_seconds_count")
    hits = server.metric("qwick:prefix_cache_hits_total")
    shared = [{"role": "user", "content": "A shared prefix that is long enough to fill a few cache blocks. " * 3}]
    for _ in range(2):
        client.chat.completions.create(model=MODEL, messages=shared, max_tokens=5, extra_body={"ignore_eos": True})
    assert wait_until(lambda: server.metric("qwick:generation_tokens_total") == generated + 10)
    assert server.metric("qwick:request_success_total", finished_reason="length") == finished + 2
    assert server.metric("qwick:e2e_request_latency_seconds_count") == e2e + 2
    assert server.metric("qwick:prefix_cache_hits_total") >= hits + 16
    assert server.metric("qwick:num_requests_running") == 0
    assert server.get("/metrics").headers["content-type"].startswith("text/plain")
