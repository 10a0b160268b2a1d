"""`qwick serve --speculative-config` / `--no-jump-forward` reach the engine; bad configs fail at parse time;
the acceptance counters are on /metrics under vLLM's names."""

from __future__ import annotations

import pytest

from qwick.cli import build_parser, main
from qwick.engine.args import EngineArgs
from qwick.engine.stats import EngineStats
from qwick.server.metrics import ServerMetrics


def parse(*flags: str):
    return build_parser().parse_args(["serve", "some-model", *flags])


def test_serve_flags_reach_engine_args():
    args = EngineArgs.from_cli_args(parse("--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3, '
                                          '"prompt_lookup_max": 4}', "--no-jump-forward"))
    assert args.speculative_config == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}
    assert args.speculative is not None and args.speculative.prompt_lookup_min == 4
    assert args.jump_forward is False
    defaults = EngineArgs.from_cli_args(parse())
    assert defaults.speculative_config is None and defaults.jump_forward is True


@pytest.mark.parametrize(("value", "message"), [
    ('{"method": "eagle", "num_speculative_tokens": 2}', "method must be 'ngram'"),
    ("{oops", "not valid JSON"),
    ('{"num_speculative_tokens": 2, "draft_model": "x"}', "unsupported keys"),
])
def test_bad_speculative_config_fails_before_the_model_loads(value, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tmp_path / "no-model-here"), "--speculative-config", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--speculative-config" in err and message in err and "Traceback" not in err


def test_acceptance_counters_on_metrics():
    stats = EngineStats(spec_decode_num_drafts=3, spec_decode_num_draft_tokens=12, spec_decode_num_accepted_tokens=9)
    text = ServerMetrics("m", lambda: stats).render().decode()
    assert 'qwick:spec_decode_num_drafts_total{model_name="m"} 3.0' in text
    assert 'qwick:spec_decode_num_draft_tokens_total{model_name="m"} 12.0' in text
    assert 'qwick:spec_decode_num_accepted_tokens_total{model_name="m"} 9.0' in text
    assert stats.spec_decode_acceptance_rate == 0.75
