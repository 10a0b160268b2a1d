from qwick.engine.runner import CHUNK_PADDING_SLACK, group_chunks
from qwick.engine.scheduler import PrefillChunk


class _Seq:
    num_cached = 0
    total_len = 1000


def _chunks(*lengths: int) -> list[PrefillChunk]:
    return [PrefillChunk(_Seq(), n) for n in lengths]  # type: ignore[arg-type]


def test_equal_lengths_share_one_forward():
    assert [len(g) for g in group_chunks(_chunks(24, 24, 24, 24))] == [4]


def test_a_long_chunk_is_not_padded_against_short_ones():
    groups = group_chunks(_chunks(20, 500, 22, 21))
    assert [[c.num_tokens for c in g] for g in groups] == [[500], [22, 21, 20]]


def test_padding_stays_within_a_quarter_of_the_real_tokens_or_the_slack():
    for group in group_chunks(_chunks(100, 90, 80, 70, 60, 50, 40, 30, 20, 10)):
        real = sum(c.num_tokens for c in group)
        padded = group[0].num_tokens * len(group)
        assert padded <= real * 1.25 or padded <= real + CHUNK_PADDING_SLACK


def test_tiny_chunks_share_one_forward_despite_doubling():
    # a scoring request's forks: 1- and 2-token chunks; one forward costs a weight read, padding a few tokens not
    assert [len(g) for g in group_chunks(_chunks(2, 1, 2, 1, 1))] == [5]
    assert [len(g) for g in group_chunks(_chunks(40, 1))] == [1, 1]  # 39 padding tokens: over the slack
