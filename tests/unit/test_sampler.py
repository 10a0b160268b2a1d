import math

import torch

from qwick.engine.sampler import SamplingRow, apply_penalties, sample
from qwick.sampling_params import SamplingParams

V = 50


def _row(seed: int = 0, output_ids=(), prompt_ids=(), banned=(), **params) -> SamplingRow:
    return SamplingRow(_resolved(**params),
                       torch.Generator().manual_seed(seed), list(prompt_ids), list(output_ids), list(banned))


def _resolved(**params) -> SamplingParams:
    base = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}
    base.update(params)
    return SamplingParams(**base)


def test_padded_vocabulary_ids_are_never_sampled():
    logits = torch.zeros(2, V)
    logits[:, 45:] = 100.0  # the padding rows would win every draw
    result = sample(logits, [_row(temperature=0), _row(seed=1)], valid_vocab=40)
    assert all(t < 40 for t in result.token_ids)


def test_greedy_takes_the_argmax():
    logits = torch.randn(1, V)
    assert sample(logits.clone(), [_row(temperature=0)], V).token_ids == [int(logits.argmax())]


def test_top_k_one_is_greedy_at_any_temperature():
    logits = torch.randn(1, V)
    assert sample(logits.clone(), [_row(temperature=5.0, top_k=1)], V).token_ids == [int(logits.argmax())]


def test_tiny_top_p_keeps_only_the_most_likely_token():
    logits = torch.randn(1, V)
    assert sample(logits.clone(), [_row(top_p=1e-6)], V).token_ids == [int(logits.argmax())]


def test_min_p_removes_tokens_below_the_threshold():
    logits = torch.full((1, V), -10.0)
    logits[0, 3], logits[0, 7] = 5.0, 4.0  # 7 has ~37% of token 3's probability
    draws = {sample(logits.clone(), [_row(seed=s, min_p=0.5)], V).token_ids[0] for s in range(30)}
    assert draws == {3}


def test_same_seed_gives_the_same_draws_and_other_seeds_differ():
    logits = torch.zeros(1, V)
    first = [sample(logits.clone(), [_row(seed=7)], V).token_ids[0] for _ in range(1)]
    again = [sample(logits.clone(), [_row(seed=7)], V).token_ids[0] for _ in range(1)]
    others = {sample(logits.clone(), [_row(seed=s)], V).token_ids[0] for s in range(20)}
    assert first == again
    assert len(others) > 1


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    gen_row = _row(seed=123)
    counts = [0, 0, 0]
    for _ in range(3000):
        counts[sample(logits.clone(), [gen_row], 3).token_ids[0]] += 1
    assert abs(counts[0] / 3000 - 0.7) < 0.03 and abs(counts[2] / 3000 - 0.1) < 0.03


def test_banned_ids_cannot_be_chosen():
    logits = torch.zeros(1, V)
    logits[0, 5] = 50.0
    assert sample(logits, [_row(temperature=0, banned=[5])], V).token_ids != [5]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = apply_penalties(logits, [_row(prompt_ids=[0], output_ids=[1], repetition_penalty=2.0)])
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_presence_and_frequency_penalties_use_output_counts_only():
    logits = torch.zeros(1, 4)
    row = _row(prompt_ids=[3], output_ids=[1, 1, 2], presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, [row])
    assert out.tolist() == [[0.0, -1.0, -0.75, 0.0]]


def test_logprobs_are_the_raw_model_distribution():
    logits = torch.randn(1, V)
    expected = torch.log_softmax(logits[0], dim=-1)
    result = sample(logits.clone(), [_row(temperature=0.3, logprobs=2)], V)
    assert result.logprobs[0] is not None
    assert torch.allclose(result.logprobs[0], expected)
    assert math.isclose(float(result.logprobs[0].exp().sum()), 1.0, rel_tol=1e-5)


def _nucleus_by_full_sort(logits: torch.Tensor, top_p: float) -> set[int]:
    """The reference top-p set: sort everything, keep tokens until the mass before them reaches top_p."""
    probs, ids = torch.sort(torch.softmax(logits, dim=-1), descending=True)
    keep = (torch.cumsum(probs, dim=-1) - probs) < top_p
    return set(ids[keep].tolist())


def test_top_p_finds_the_nucleus_from_a_head_or_the_full_sort_exactly():
    from qwick.engine import sampler

    torch.manual_seed(0)
    for scale, top_p in ((8.0, 0.9), (8.0, 0.999), (0.5, 0.5), (0.01, 0.95)):  # peaked ... nearly uniform
        logits = torch.randn(20_000) * scale
        values, ids = sampler._truncate(logits.clone(), _resolved(top_p=top_p))
        kept = set(ids[values > float("-inf")].tolist())
        assert kept == _nucleus_by_full_sort(logits, top_p), (scale, top_p)


def test_min_p_is_relative_to_the_most_likely_token_after_top_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04]))
    from qwick.engine import sampler

    values, ids = sampler._truncate(logits.clone(), _resolved(top_p=0.95, min_p=0.15))
    assert set(ids[values > float("-inf")].tolist()) == {0, 1, 2}  # 0.06 < 0.15 * 0.5; 0.04 also past top_p


def test_a_draw_never_picks_an_excluded_token_and_follows_the_distribution():
    logits = torch.full((1, 1000), float("-inf"))
    logits[0, [10, 500, 999]] = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    row = _row(seed=5)
    counts: dict[int, int] = {}
    for _ in range(4000):
        token = sample(logits.clone(), [row], 1000).token_ids[0]
        counts[token] = counts.get(token, 0) + 1
    assert set(counts) == {10, 500, 999}
    assert abs(counts[10] / 4000 - 0.5) < 0.03 and abs(counts[999] / 4000 - 0.2) < 0.03


def test_top_p_zero_is_the_most_likely_token_alone():
    logits = torch.randn(4, V)
    rows = [_row(seed=s, temperature=2.0, top_p=0.0) for s in range(4)]
    assert sample(logits.clone(), rows, V).token_ids == logits.argmax(dim=-1).tolist()


def test_logit_bias_is_added_per_row_in_one_batch():
    logits = torch.zeros(3, V)
    rows = [_row(temperature=0, logit_bias={7: 100.0}), _row(temperature=0, logit_bias={9: 5.0, 7: -100.0}),
            _row(temperature=0)]
    logits[2, 3] = 1.0
    assert sample(logits, rows, V).token_ids == [7, 9, 3]


def test_logit_bias_minus_100_bans_a_sampled_token_and_logprobs_stay_raw():
    logits = torch.zeros(1, V)
    logits[0, 5] = 20.0  # would win nearly every draw
    for seed in range(5):
        result = sample(logits.clone(), [_row(seed=seed, logprobs=1, logit_bias={5: -100.0})], V)
        assert result.token_ids[0] != 5
        assert result.logprobs[0].argmax() == 5  # reported from the model's distribution, before the bias


def test_rows_sharing_a_top_k_draw_the_same_tokens_alone_or_in_a_batch():
    logits = torch.randn(5, V)
    specs = [dict(top_k=8, top_p=0.7, seed=1), dict(temperature=0), dict(top_k=8, min_p=0.2, seed=2),
             dict(top_k=8, temperature=0.5, seed=3), dict(top_k=8, top_p=0.9, min_p=0.05, seed=4)]
    batched = sample(logits.clone(), [_row(**s) for s in specs], V).token_ids
    alone = [sample(logits[i : i + 1].clone(), [_row(**s)], V).token_ids[0] for i, s in enumerate(specs)]
    assert batched == alone
    assert batched[1] == int(logits[1].argmax())


def test_the_shared_top_k_draw_follows_the_truncated_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    row = _row(seed=5, top_k=3, top_p=0.75)  # top-3 keeps 0.5 / 0.3 / 0.15; top-p 0.75 drops 0.15
    counts = [0, 0, 0, 0]
    for _ in range(2000):
        counts[sample(logits.clone(), [row], 4).token_ids[0]] += 1
    assert counts[2] == counts[3] == 0 and abs(counts[0] / 2000 - 0.5 / 0.8) < 0.04


def test_grammar_masks_and_banned_ids_apply_per_row_in_one_batch():
    logits = torch.zeros(3, V)
    logits[:, 9] = 50.0
    allowed = torch.zeros(V, dtype=torch.bool)
    allowed[[4, 6]] = True
    rows = [_row(temperature=0), _row(temperature=0, banned=[9, 4]), _row(temperature=0)]
    rows[0].allowed = allowed
    tokens = sample(logits, rows, V).token_ids
    assert tokens[0] in (4, 6) and tokens[1] not in (9, 4) and tokens[2] == 9
