"""AsyncLLMEngine: concurrent streams over one engine thread, early exits, errors, failures and shutdown.

Each test owns the package's engine through its own AsyncLLMEngine and shuts it down before returning;
reference outputs come from `llm.generate` while no AsyncLLMEngine is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from qwick import SamplingParams
from qwick.engine.async_engine import AsyncLLMEngine
from qwick.engine.client import EngineNotRunningError, RequestDelta, RequestFailedError

TIMEOUT = 30.0  # per test: nothing may hang
GREEDY = dict(temperature=0.0, ignore_eos=True)
PROMPTS = ["a", "The weather in Paris is", "1 2 3 4 5 6", "你好，世界", "def f(x):", "Once upon a time",
           "Emoji: 🙂 ok", "Bonjour"]


def run(main: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(main, TIMEOUT))


@contextlib.asynccontextmanager
async def serving(llm) -> AsyncIterator[AsyncLLMEngine]:
    client = AsyncLLMEngine(llm.engine)
    try:
        yield client
    finally:
        await client.shutdown(timeout=5.0)


async def collect(client: AsyncLLMEngine, prompt_ids: list[int], params: SamplingParams,
                  request_id: str) -> list[RequestDelta]:
    return [d async for d in client.generate(prompt_ids, params, request_id)]


async def collect_rest(stream: AsyncIterator[RequestDelta]) -> list[RequestDelta]:
    return [d async for d in stream]


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def calls_to(monkeypatch, engine, name: str, before: Callable[[], None] = lambda: None) -> list[tuple]:
    """Record the engine method's calls (running `before` first); returns the list of argument tuples."""
    real = getattr(engine, name)
    calls: list[tuple] = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        before()
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, name, wrapper)
    return calls


@pytest.fixture
def ids(llm) -> list[int]:
    return llm.get_tokenizer().encode("The quick brown fox jumps over the lazy dog")


def engine_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "qwick-engine-loop"}


@pytest.fixture(autouse=True)
def engine_left_idle(llm):
    before = engine_threads()  # e.g. a session-scoped test server's: not this test's to stop
    yield
    assert not llm.engine.has_unfinished()
    stats = getattr(llm.engine, "stats", None)  # the paged engine reports its KV usage: every block is free
    if callable(stats):
        assert stats().kv_cache_usage == 0.0
    assert not engine_threads() - before


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=1.0, top_p=0.9, seed=7)],
                         ids=["greedy", "seeded"])
def test_concurrent_requests_equal_offline_generate(llm, sampling):
    tokenizer = llm.get_tokenizer()
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    params = [SamplingParams(max_tokens=4 + 3 * i, ignore_eos=True, **sampling) for i in range(len(prompts))]
    expected = llm.generate([{"prompt_token_ids": p} for p in prompts], params)

    async def main():
        async with serving(llm) as client:
            return await asyncio.gather(*(collect(client, p, sp, f"r{i}")
                                          for i, (p, sp) in enumerate(zip(prompts, params, strict=True))))

    for deltas, want in zip(run(main()), expected, strict=True):
        assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
        got = deltas[-1].output.outputs[0]
        assert (got.token_ids, got.text, got.finish_reason) == (want.outputs[0].token_ids, want.outputs[0].text,
                                                                "length")


def test_streamed_deltas_concatenate_to_the_final_output(llm, ids):
    params = SamplingParams(n=2, max_tokens=24, temperature=1.0, seed=3, ignore_eos=True)

    async def main():
        async with serving(llm) as client:
            return await collect(client, ids, params, "r")

    deltas = run(main())
    for out in deltas[-1].output.outputs:
        mine = [d for step in deltas for d in step.deltas if d.index == out.index]
        assert "".join(d.text for d in mine) == out.text
        assert [t for d in mine for t in d.token_ids] == out.token_ids
        assert [d.finish_reason for d in mine] == [None] * (len(mine) - 1) + ["length"]


def test_breaking_out_of_the_stream_aborts_the_request(llm, ids, monkeypatch):
    aborted = calls_to(monkeypatch, llm.engine, "abort")

    async def main():
        async with serving(llm) as client:
            async for _ in client.generate(ids, SamplingParams(max_tokens=None, **GREEDY), "r"):
                break
            await until(lambda: ("r",) in aborted)

    run(main())


def test_cancelling_the_consumer_aborts_the_request(llm, ids, monkeypatch):
    aborted = calls_to(monkeypatch, llm.engine, "abort")

    async def main():
        async with serving(llm) as client:
            started = asyncio.Event()

            async def consume():  # a client that disconnects mid-stream
                async for _ in client.generate(ids, SamplingParams(max_tokens=None, **GREEDY), "r"):
                    started.set()

            task = asyncio.create_task(consume())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: ("r",) in aborted)

    run(main())


def test_an_invalid_request_fails_its_caller_only(llm, ids):
    params = SamplingParams(max_tokens=12, **GREEDY)
    expected = llm.generate({"prompt_token_ids": ids}, params)[0].outputs[0]

    async def main():
        async with serving(llm) as client:
            good = asyncio.create_task(collect(client, ids, params, "good"))
            with pytest.raises(ValueError, match="max_model_len"):
                await collect(client, [1] * 300, params, "too-long")
            with pytest.raises(ValueError, match="empty"):
                await collect(client, [], params, "empty")
            return await good, await collect(client, ids, params, "after")

    good, after = run(main())
    assert good[-1].output.outputs[0].token_ids == expected.token_ids
    assert after[-1].output.outputs[0].token_ids == expected.token_ids


def test_a_failed_step_fails_the_requests_in_the_engine_and_the_loop_goes_on(llm, ids, monkeypatch, caplog):
    params = SamplingParams(max_tokens=12, **GREEDY)
    expected = llm.generate({"prompt_token_ids": ids}, params)[0].outputs[0]
    boom = RuntimeError("injected step failure")
    added = calls_to(monkeypatch, llm.engine, "add_request")
    real_step, failed = llm.engine.step, []

    def step_then_fail_once_both_are_in():  # late in the step: their KV blocks are in use
        outputs = real_step()
        if len(added) == 2 and not failed:
            failed.append(True)
            raise boom
        return outputs

    monkeypatch.setattr(llm.engine, "step", step_then_fail_once_both_are_in)
    long = SamplingParams(max_tokens=None, **GREEDY)

    async def main():
        async with serving(llm) as client:
            results = await asyncio.gather(collect(client, ids, long, "a"), collect(client, ids, long, "b"),
                                           return_exceptions=True)
            assert client.is_running and not client.errored
            return results, await collect(client, ids, params, "c")

    (a, b), c = run(main())
    assert isinstance(a, RequestFailedError) and a.__cause__ is boom
    assert isinstance(b, RequestFailedError) and b.__cause__ is boom
    assert c[-1].output.outputs[0].token_ids == expected.token_ids
    assert any("'a', 'b'" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_request_id_in_use_is_rejected(llm, ids):
    params = SamplingParams(max_tokens=8, **GREEDY)

    async def main():
        async with serving(llm) as client:
            first = client.generate(ids, SamplingParams(max_tokens=30, **GREEDY), "same")
            await anext(first)
            with pytest.raises(ValueError, match="already running"):
                await anext(client.generate(ids, params, "same"))
            rest = [d async for d in first]
            return rest[-1], (await collect(client, ids, params, "same"))[-1]  # reusable once finished

    first, again = run(main())
    assert len(first.output.outputs[0].token_ids) == 30
    assert len(again.output.outputs[0].token_ids) == 8


def test_abort_by_id_ends_the_stream_with_abort(llm, ids):
    async def main():
        async with serving(llm) as client:
            await client.abort("unknown")  # a no-op
            stream = client.generate(ids, SamplingParams(max_tokens=None, **GREEDY), "r")
            head = [await anext(stream)]
            await client.abort("r")
            return head + [d async for d in stream]

    deltas = run(main())
    final = deltas[-1]
    assert final.finished and [d.finish_reason for d in final.deltas] == ["abort"]
    out = final.output.outputs[0]
    assert out.finish_reason == "abort"
    assert out.token_ids == [t for step in deltas for d in step.deltas for t in d.token_ids]
    assert out.text == "".join(d.text for step in deltas for d in step.deltas)


def test_shutdown_lets_running_requests_finish(llm, ids):
    params = SamplingParams(max_tokens=20, **GREEDY)

    async def main():
        client = AsyncLLMEngine(llm.engine)
        streams = [client.generate(ids, params, f"r{i}") for i in range(3)]
        heads = [await anext(s) for s in streams]  # all three are in the engine
        await client.shutdown(timeout=10.0)
        assert not client.is_running and not client.errored
        with pytest.raises(EngineNotRunningError):
            await anext(client.generate(ids, params, "late"))
        return [[head] + await collect_rest(stream) for head, stream in zip(heads, streams, strict=True)]

    for deltas in run(main()):
        assert deltas[-1].output.outputs[0].finish_reason == "length"
        assert len(deltas[-1].output.outputs[0].token_ids) == 20


def test_shutdown_aborts_what_is_left_after_its_timeout(llm, ids, monkeypatch):
    calls_to(monkeypatch, llm.engine, "step", before=lambda: time.sleep(0.01))  # 200+ tokens take > 2 s

    async def main():
        client = AsyncLLMEngine(llm.engine)
        stream = client.generate(ids, SamplingParams(max_tokens=None, **GREEDY), "r")
        await anext(stream)
        await client.shutdown(timeout=0.2)
        return [d async for d in stream]

    assert run(main())[-1].output.outputs[0].finish_reason == "abort"


def test_the_loop_thread_sleeps_when_idle(llm, ids, monkeypatch):
    steps = calls_to(monkeypatch, llm.engine, "step")

    async def main():
        async with serving(llm) as client:
            await collect(client, ids, SamplingParams(max_tokens=5, **GREEDY), "r")
            busy = len(steps)
            await asyncio.sleep(0.2)
            return busy, len(steps)

    busy, later = run(main())
    assert busy >= 5 and later == busy


def test_a_dead_loop_fails_its_callers_and_reports_errored(llm, ids, monkeypatch):
    class Fatal(BaseException):  # escapes `except Exception`: the loop cannot go on
        pass

    def die():
        raise Fatal

    calls_to(monkeypatch, llm.engine, "step", before=die)

    async def main():
        async with serving(llm) as client:
            with pytest.raises(EngineNotRunningError) as info:
                await collect(client, ids, SamplingParams(max_tokens=4, **GREEDY), "r")
            assert isinstance(info.value.__cause__, Fatal)
            await until(lambda: client.errored)
            assert not client.is_running
            with pytest.raises(EngineNotRunningError):
                await collect(client, ids, SamplingParams(max_tokens=4, **GREEDY), "later")

    run(main())


def test_stats_pass_the_engines_snapshot_through(llm, ids):
    if not callable(getattr(llm.engine, "stats", None)):
        pytest.skip("this LLMEngine has no stats() yet")

    async def main():
        async with serving(llm) as client:
            await collect(client, ids, SamplingParams(max_tokens=5, **GREEDY), "r")
        return client.stats()  # the loop took an exact snapshot when it went idle

    assert run(main()) == llm.engine.stats()


def test_a_factory_builds_the_engine_on_the_loop_thread(llm, ids):
    built_on: list[str] = []

    def build():
        built_on.append(threading.current_thread().name)
        return llm.engine

    async def main() -> list[RequestDelta]:
        client = AsyncLLMEngine(build)
        try:
            assert client.engine is llm.engine
            return await collect(client, ids, SamplingParams(max_tokens=4, temperature=0.0), "r")
        finally:
            await client.shutdown(timeout=5.0)

    deltas = run(main())
    assert built_on == ["qwick-engine-loop"]  # every torch op of the engine on one thread (module docstring)
    assert deltas[-1].finished and deltas[-1].output.outputs[0].token_ids == llm.generate(
        [{"prompt_token_ids": ids}], SamplingParams(max_tokens=4, temperature=0.0))[0].outputs[0].token_ids


def test_a_failing_factory_raises_in_the_constructor_and_leaves_no_thread():
    def build():
        raise ValueError("no such model: /nowhere")

    before = engine_threads()
    with pytest.raises(ValueError, match="no such model"):
        AsyncLLMEngine(build)
    assert engine_threads() == before
