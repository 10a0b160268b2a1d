"""Decision rules: normalisation, moderation allow/reason/escalate, and timeout policies."""

from __future__ import annotations

import math

import pytest

from qwick.gates.decisions import Decision, margin, normalise
from qwick.gates.kinds.labels import Moderate
from qwick.gates.spec import GateSpec

MOD = GateSpec("mod", "moderate", "x", labels=("safe", "violence", "hate"), threshold=0.6, escalate_margin=0.2)


def test_normalise_is_a_softmax_over_the_labels_and_sums_to_one():
    scores = normalise(("a", "b", "c"), [math.log(0.2), math.log(0.1), math.log(0.1)])
    assert scores == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    assert sum(normalise(("a", "b"), [-1000.0, -1001.0]).values()) == pytest.approx(1.0)  # no underflow


@pytest.mark.parametrize(("scores", "allow", "reason", "escalate"), [
    ({"safe": 0.7, "violence": 0.2, "hate": 0.1}, True, "none", False),
    ({"safe": 0.6, "violence": 0.3, "hate": 0.1}, True, "none", False),  # threshold is inclusive
    ({"safe": 0.5, "violence": 0.1, "hate": 0.4}, False, "hate", True),  # margin 0.1 < 0.2
    ({"safe": 0.1, "violence": 0.8, "hate": 0.1}, False, "violence", False),
])
def test_moderation_rule(scores, allow, reason, escalate):
    d = Moderate().apply(MOD, Decision("mod", "moderate", "r"), scores)
    assert (d.allow, d.reason, d.escalate, d.label) == (allow, reason, escalate, max(scores, key=scores.get))
    assert d.summary == ("allow" if allow else "deny")


@pytest.mark.parametrize(("policy", "allow", "escalate", "summary"), [
    ("allow", True, False, "timeout:allow"), ("deny", False, False, "timeout:deny"),
    ("escalate", False, True, "timeout:escalate"),
])
def test_timeout_policies(policy, allow, escalate, summary):
    spec = GateSpec("mod", "moderate", "x", labels=("safe", "bad"), on_timeout=policy)
    d = Moderate().time_out(spec, Decision("mod", "moderate", "r"))
    assert (d.allow, d.escalate, d.timed_out, d.reason, d.summary) == (allow, escalate, True, "timeout", summary)


def test_margin_of_a_single_label_is_full():
    assert margin({"a": 1.0}) == 1.0
    assert margin({"a": 0.5, "b": 0.3, "c": 0.2}) == pytest.approx(0.2)


def test_every_kind_a_gate_file_may_declare_has_its_class():
    from qwick.gates.kinds import GATE_KINDS
    from qwick.gates.spec import KIND_RULES

    assert list(GATE_KINDS) == list(KIND_RULES)
    assert all(kind.name == name for name, kind in GATE_KINDS.items())
