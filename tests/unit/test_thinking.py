from qwick.engine.thinking import ThinkingTracker, ThinkState

START, END, NL = 151667, 151668, 198
CLOSE = [NL, END, 271]


def _tracker(prompt, budget):
    return ThinkingTracker.for_prompt(prompt, START, END, budget, CLOSE)


def _run(tracker, sampled):
    """Feed sampled tokens, replacing them by forced ones when the tracker says so."""
    out = []
    for token in sampled:
        forced = tracker.next_forced()
        token = forced if forced is not None else token
        out.append(token)
        tracker.observe(token)
    return out


def test_budget_closes_the_block_after_that_many_thinking_tokens():
    out = _run(_tracker([1, 2], budget=3), [START, 10, 11, 12, 13, 14, 15, 16, 17])
    assert out == [START, 10, 11, 12, *CLOSE, 16, 17]


def test_model_closing_the_block_itself_stops_the_budget():
    tracker = _tracker([1], budget=5)
    out = _run(tracker, [START, 10, END, 11, 12, 13, 14, 15, 16])
    assert out == [START, 10, END, 11, 12, 13, 14, 15, 16]
    assert tracker.state is ThinkState.DONE


def test_prompt_that_opened_the_block_counts_from_the_first_token():
    out = _run(_tracker([1, START, NL], budget=2), [10, 11, 12, 13, 14, 15])
    assert out == [10, 11, *CLOSE, 15]


def test_zero_budget_closes_right_after_think():
    out = _run(_tracker([1], budget=0), [START, 10, 11, 12, 13])
    assert out == [START, *CLOSE, 13]


def test_disabled_thinking_prompt_is_left_alone():
    tracker = _tracker([1, START, 271, END, 271], budget=0)
    assert _run(tracker, [10, 11, 12]) == [10, 11, 12]


def test_output_without_think_block_is_left_alone():
    assert _run(_tracker([1], budget=1), [10, 11, 12, 13]) == [10, 11, 12, 13]
