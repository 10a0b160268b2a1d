"""Bad training data stops `qwick finetune` before training: `file:line: problem`, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from trainkit import chat, write_jsonl

from qwick.cli import main
from qwick.train.data import DataError, load_rows

GOOD = chat("Hi", "Hello!")
GOOD_LINE = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}'
CASES = {
    "invalid json": ['{"messages": [', "train.jsonl:1: invalid JSON"],
    "not an object": ["[1, 2]", "train.jsonl:1: expected a JSON object, got list"],
    "missing content": [{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},
                        'train.jsonl:1: messages[0] (user) has no "content"'],
    "missing role": [{"messages": [{"content": "x"}]}, 'train.jsonl:1: messages[0] has no "role"'],
    "wrong role": [{"messages": [{"role": "bot", "content": "x"}]},
                   "train.jsonl:1: messages[0] has role 'bot'; expected one of system, user, assistant, tool"],
    "empty messages": [{"messages": []}, 'train.jsonl:1: "messages" is empty'],
    "no answer": [{"messages": [{"role": "user", "content": "x"}]}, 'train.jsonl:1: the last message has role "user"'],
    "empty answer": [chat("Hi", " "), "train.jsonl:1: messages[1] (assistant) is empty: nothing to train on"],
    "content parts": [{"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
                      "train.jsonl:1: messages[0].content must be a string, got list"],
    "control token": [chat("<|im_start|>assistant\nfake", "x"),
                      "train.jsonl:1: messages[0].content contains the control token <|im_start|>"],
    "bad tool call": [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
                      {"function": {"name": "f", "arguments": "{not json"}}]}]},
                      "train.jsonl:1: messages[1].tool_calls[0].arguments is a string but not valid JSON"],
    "empty completion": [{"prompt": "Q", "completion": ""}, 'train.jsonl:1: "completion" is empty'],
    "gate without text": [{"label": "spam"}, 'train.jsonl:1: missing field "text"'],
    "text only": [{"text": "some prose"}, "train.jsonl:1: a {\"text\"} row without \"label\" is pretraining text"],
    "unknown format": [{"question": "x"}, "train.jsonl:1: unknown row format (keys: question)"],
}


@pytest.fixture()
def run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative paths, so messages read `train.jsonl:N:`

    def finetune_on(rows: list) -> tuple[int, str]:
        write_jsonl(tmp_path / "train.jsonl", rows)
        code = main(["finetune", "no-model-needed", "--data", "train.jsonl", "--out", "adapter"])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert not (tmp_path / "adapter").exists()
        return code, err

    return finetune_on


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_row_is_reported_with_its_line_number(run, case):
    row, expected = CASES[case]
    code, err = run([row])
    assert code == 2
    assert expected in err
    assert "nothing was trained" in err


def test_line_number_counts_from_one_after_good_rows(run):
    code, err = run([GOOD] * 16 + ['{"messages": "oops"}'])
    assert code == 2
    assert err.startswith('train.jsonl:17: "messages" must be a list of messages, got str')


def test_every_bad_line_is_reported_not_just_the_first(run):
    code, err = run([GOOD, "{", GOOD, {"messages": []}, GOOD])
    assert code == 2
    assert "train.jsonl:2: invalid JSON" in err
    assert 'train.jsonl:4: "messages" is empty' in err


def test_blank_line_inside_the_file_is_an_error_but_trailing_ones_are_not(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(f"{GOOD_LINE}\n\n{GOOD_LINE}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl:2: empty line"):
        load_rows(path)
    path.write_text(f"{GOOD_LINE}\n{GOOD_LINE}\n\n\n", encoding="utf-8")
    assert len(load_rows(path)) == 2


def test_empty_file(run):
    code, err = run([])
    assert code == 2
    assert "train.jsonl: the file is empty" in err


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    code = main(["finetune", "m", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "a")])
    assert code == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err


def test_good_rows_of_every_format_pass(tmp_path):
    rows = [GOOD, {"prompt": "Q:", "completion": " A"}, {"text": "cheap pills", "label": "spam"},
            {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Yo"}]}]
    parsed = load_rows(write_jsonl(tmp_path / "train.jsonl", rows), gate_template="Spam? {text}")
    assert [row.line for row in parsed] == [1, 2, 3, 4]
    assert parsed[2].messages[0]["content"] == "Spam? cheap pills"

