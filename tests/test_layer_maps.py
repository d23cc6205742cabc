import pytest

from kdforge.layer_maps import expand_pairs, layer_map


@pytest.mark.parametrize(("n_s", "n_t", "kind", "expected"), [
    (3, 12, "uniform", [(0, 3), (1, 7), (2, 11)]),  # TinyBERT: every 4th layer, ending at the top
    (2, 2, "uniform", [(0, 0), (1, 1)]),
    (5, 12, "skip", [(0, 1), (1, 3), (2, 5), (3, 7), (4, 9)]),  # PKD-Skip: teacher layers 2, 4, ..., 10
    (5, 11, "last", [(0, 6), (1, 7), (2, 8), (3, 9), (4, 10)]),  # PKD-Last: teacher layers 7 .. 11
    (2, 4, [0, 3], [(0, 0), (1, 3)]),
])
def test_maps(n_s, n_t, kind, expected):
    assert layer_map(n_s, n_t, kind) == expected


@pytest.mark.parametrize(("n_s", "n_t", "kind", "message"), [
    (4, 2, "uniform", "4 student layers cannot each take a different one of 2 teacher layers"),
    (5, 12, "uniform", "must be a multiple of the student count"),
    (4, 12, "skip", r"must be a multiple of the student count \+ 1 \(5\)"),
    (2, 4, [0, 4], r"teacher indices \[4\] are out of range; there are 4 teacher layers"),
    (2, 4, [1], "needs one teacher index per student layer"),
    (0, 4, "last", "must be an integer >= 1"),
    (2, 4, "middle", "unknown map 'middle'"),
])
def test_impossible_maps_raise_clear_errors(n_s, n_t, kind, message):
    with pytest.raises(ValueError, match=message):
        layer_map(n_s, n_t, kind)


def test_expand_pairs_from_a_spec_and_from_explicit_pairs():
    spec = {"map": "uniform", "student": ["s1", "s2"], "teacher": ["t1", "t2", "t3", "t4"]}
    assert expand_pairs(spec, "PKDLoss") == [("s1", "t2"), ("s2", "t4")]
    assert expand_pairs({"student": ["a"], "teacher": ["b"]}, "X") == [("a", "b")]  # uniform by default
    assert expand_pairs([["a", "b"], ("c", "d")], "X") == [("a", "b"), ("c", "d")]


@pytest.mark.parametrize(("pairs", "message"), [
    ([], "ATLoss needs at least one"),
    ([["a"]], r"each pair is \[student_tap, teacher_tap\]"),
    ({"student": ["a"], "teachers": ["b"]}, "has the keys map, student and teacher"),
    ({"student": "a", "teacher": ["b"]}, r"'pairs.student' must be a list of tap names"),
    ({"map": "skip", "student": ["a", "b"], "teacher": ["c", "d"]}, "ATLoss: pairs: layer map 'skip'"),
])
def test_bad_pairs_name_the_loss(pairs, message):
    with pytest.raises(ValueError, match=message):
        expand_pairs(pairs, "ATLoss")
