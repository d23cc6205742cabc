"""What one Unigram training gives apart from another (hash-order noise, the brought-back characters' order)
is removed; what tells two tokenizers apart is kept."""

from kdforge.data.lm_tokenizers import _canonical_unigram_scores

LOW = -9.445867834777342


def trained(fill_order, noise):
    """Pieces as the trainer writes them: learnt ones, then characters at LOW + k * 1e-4 in `fill_order`."""
    learnt = [["▁the", -2.5 + noise], ["ab", -6.25 - noise], ["q", -7.0 + noise]]
    return learnt + [[char, LOW + k * 1e-4] for k, char in enumerate(fill_order)]


def test_two_trainings_give_the_same_scores():
    one = _canonical_unigram_scores(trained("xyz", 4e-11))
    two = _canonical_unigram_scores(trained("zxy", -3e-11))
    assert sorted(one) == sorted(two)  # the caller orders the pieces by text
    assert dict(one) == {"▁the": -2.5, "ab": -6.25, "q": -7.0, "x": round(LOW, 5), "y": round(LOW + 1e-4, 5),
                         "z": round(LOW + 2e-4, 5)}  # brought-back characters scored in text order


def test_learnt_scores_that_differ_stay_apart():
    base = dict(_canonical_unigram_scores(trained("xyz", 0.0)))
    moved = trained("xyz", 0.0)
    moved[2] = ["q", -7.0 + 2e-5]  # a single character, but not on the brought-back grid: its own score stays
    assert dict(_canonical_unigram_scores(moved))["q"] != base["q"]
    assert _canonical_unigram_scores([]) == []
