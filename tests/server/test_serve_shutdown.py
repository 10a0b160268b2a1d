"""`qwick serve` shutting down: a clean drain exits 0 on SIGTERM; past --shutdown-timeout, open streams end with
the "server is shutting down" error event and [DONE], and --ledger-all still records them."""

from __future__ import annotations

import json
import signal
import sqlite3

import httpx
from servecli import qwick_serve
from serverkit import TIMEOUT


def _stream_lines(url: str, body: dict, process, after_first) -> list[str]:
    with httpx.stream("POST", url, json=body, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        after_first()
        return [line for line in lines if line.startswith("data: ")]  # an incomplete read raises here


def test_sigterm_after_a_clean_drain_exits_0(tiny_model_dir):
    with qwick_serve(tiny_model_dir, "--log-level", "warning") as served:
        body = {"model": "tiny", "prompt": "Hi", "max_tokens": 40, "ignore_eos": True, "stream": True}
        rest = _stream_lines(f"{served.url}/v1/completions", body, served.process,
                             lambda: served.process.send_signal(signal.SIGTERM))
        assert rest[-1] == "data: [DONE]" and '"finish_reason":"length"' in rest[-2]
        assert served.process.wait(timeout=TIMEOUT) == 0, served.output()


def test_streams_past_the_shutdown_timeout_get_the_error_event_done_and_a_ledger_row(tiny_model_dir, tmp_path):
    ledger = tmp_path / "ledger.db"
    with qwick_serve(tiny_model_dir, "--shutdown-timeout", "0.5", "--ledger", str(ledger), "--ledger-all",
                     "--log-level", "warning") as served:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2000,
                "ignore_eos": True, "stream": True}
        rest = _stream_lines(f"{served.url}/v1/chat/completions", body, served.process,
                             lambda: served.process.send_signal(signal.SIGTERM))
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2].removeprefix("data: "))["error"]
        assert "shutting down" in error["message"] and error["code"] == "aborted"
        assert served.process.wait(timeout=TIMEOUT) == 0, served.output()
    rows = sqlite3.connect(ledger).execute("SELECT kind, decision, output_tokens FROM decisions").fetchall()
    assert len(rows) == 1
    kind, decision, output_tokens = rows[0]
    assert (kind, decision) == ("completion", "abort") and 0 < output_tokens < 2000
