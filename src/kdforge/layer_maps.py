"""Layer maps: which student layer learns from which teacher layer when the teacher is deeper.

A feature loss takes `pairs` of (student_tap, teacher_tap) names. Instead of writing the pairs out, a recipe
may give a map spec, listing the taps of each model from shallow to deep and naming the map:

```yaml
taps:
  student: {s1: blocks.0, s2: blocks.1}
  teacher: {t1: blocks.0, t2: blocks.1, t3: blocks.2, t4: blocks.3}
losses:
  - name: pkd
    weight: 100.0
    pairs: {map: uniform, student: [s1, s2], teacher: [t1, t2, t3, t4]}   # -> [[s1, t2], [s2, t4]]
```

Maps, for n_s student taps and n_t teacher taps (0-based indices, i = 0 .. n_s-1):
    uniform  teacher layer (i+1)·n_t/n_s - 1: evenly spaced, the last student tap learns from the last teacher
             tap (TinyBERT's uniform strategy). Needs n_t to be a multiple of n_s.
    last     teacher layer n_t - n_s + i: the last n_s teacher taps (PKD-Last). For PKD exactly, list the
             teacher's taps up to its second-to-last layer: its last layer is taught through the logits.
    skip     teacher layer (i+1)·n_t/(n_s+1) - 1: every k-th teacher tap, leaving the last one out (PKD-Skip,
             e.g. 5 student taps and 12 teacher taps give teacher taps 2, 4, 6, 8, 10, counting from 1).
             Needs n_t to be a multiple of n_s + 1.
    [j0, j1, ...]  explicit: student tap i learns from teacher tap j_i (0-based indices into `teacher`).

Sun et al., "Patient Knowledge Distillation for BERT Model Compression", EMNLP 2019 (PKD-Skip, PKD-Last),
https://arxiv.org/abs/1908.09355; Jiao et al., "TinyBERT", 2020 (uniform), https://arxiv.org/abs/1909.10351.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LAYER_MAPS = ("uniform", "last", "skip")
_SPEC_KEYS = ("map", "student", "teacher")


def layer_map(num_student: int, num_teacher: int, kind: str | Sequence[int] = "uniform") -> list[tuple[int, int]]:
    """(student_layer, teacher_layer) index pairs, 0-based, one per student layer.

    Args:
        num_student: Number of student layers to distil into (>= 1).
        num_teacher: Number of teacher layers to choose from (>= num_student for the named maps).
        kind: 'uniform', 'last', 'skip', or an explicit list of teacher indices, one per student layer.

    Example:
        >>> layer_map(3, 12, "uniform")
        [(0, 3), (1, 7), (2, 11)]
        >>> layer_map(5, 12, "skip")
        [(0, 1), (1, 3), (2, 5), (3, 7), (4, 9)]
    """
    for value, what in ((num_student, "student"), (num_teacher, "teacher")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"layer map: the number of {what} layers must be an integer >= 1; got {value!r}.")
    if not isinstance(kind, str):
        indices = list(kind)
        if len(indices) != num_student:
            raise ValueError(
                f"layer map: an explicit map needs one teacher index per student layer ({num_student}); "
                f"got {len(indices)}: {indices}."
            )
        bad = [j for j in indices if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < num_teacher]
        if bad:
            raise ValueError(
                f"layer map: teacher indices {bad} are out of range; there are {num_teacher} teacher layers, "
                f"indexed 0 to {num_teacher - 1}."
            )
        return list(enumerate(indices))
    if kind not in LAYER_MAPS:
        raise ValueError(f"layer map: unknown map {kind!r}; use one of {', '.join(LAYER_MAPS)} or a list of indices.")
    if num_student > num_teacher:
        raise ValueError(
            f"layer map {kind!r}: {num_student} student layers cannot each take a different one of "
            f"{num_teacher} teacher layers. Tap fewer student layers or more teacher layers, or give an explicit "
            "list of teacher indices."
        )
    if kind == "last":
        return [(i, num_teacher - num_student + i) for i in range(num_student)]
    groups = num_student if kind == "uniform" else num_student + 1
    if num_teacher % groups:
        need = "a multiple of the student count" if kind == "uniform" else "a multiple of the student count + 1"
        raise ValueError(
            f"layer map {kind!r}: {num_teacher} teacher layers for {num_student} student layers; the teacher count "
            f"must be {need} ({groups}). Use 'last', an explicit list of teacher indices, or change the taps."
        )
    step = num_teacher // groups
    return [(i, (i + 1) * step - 1) for i in range(num_student)]


def expand_pairs(pairs: Any, owner: str) -> list[tuple[str, str]]:
    """A feature loss's `pairs` argument as a list of (student_tap, teacher_tap) names.

    Accepts explicit pairs, `[[s1, t1], [s2, t2]]`, or a map spec `{map, student, teacher}` (see the module
    docstring). Raises ValueError naming `owner` (the loss class) on anything else.

    Example:
        >>> expand_pairs({"map": "last", "student": ["s1"], "teacher": ["t1", "t2"]}, "PKDLoss")
        [('s1', 't2')]
    """
    if isinstance(pairs, Mapping):
        unknown = sorted(set(pairs) - set(_SPEC_KEYS))
        if unknown or "student" not in pairs or "teacher" not in pairs:
            raise ValueError(
                f"{owner}: a layer-map spec for 'pairs' has the keys map, student and teacher "
                f"(e.g. {{map: uniform, student: [s1, s2], teacher: [t1, t2, t3, t4]}}); got {sorted(pairs)}."
            )
        student, teacher = pairs["student"], pairs["teacher"]
        for taps, side in ((student, "student"), (teacher, "teacher")):
            if isinstance(taps, str) or not isinstance(taps, Sequence) or not all(isinstance(t, str) for t in taps):
                raise ValueError(f"{owner}: 'pairs.{side}' must be a list of tap names; got {taps!r}.")
        try:
            index_pairs = layer_map(len(student), len(teacher), pairs.get("map", "uniform"))
        except ValueError as exc:
            raise ValueError(f"{owner}: pairs: {exc}") from exc
        return [(student[i], teacher[j]) for i, j in index_pairs]
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or not pairs:
        raise ValueError(
            f"{owner} needs at least one (student_tap, teacher_tap) pair, e.g. pairs: [[s1, t1]], or a layer-map "
            f"spec; got {pairs!r}."
        )
    out = []
    for pair in pairs:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2 \
                or not all(isinstance(name, str) for name in pair):
            raise ValueError(f"{owner}: each pair is [student_tap, teacher_tap] (two tap names); got {pair!r}.")
        out.append((pair[0], pair[1]))
    return out
