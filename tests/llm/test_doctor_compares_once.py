"""`kdforge doctor` compares each pair of tokenizers once: a comparison reads both whole vocabularies, which is
slow for real ones (hundreds of thousands of tokens), and the checks share the one teacher/student result."""

import kdforge.app.doctor as doctor
from kdforge.app.doctor import diagnose
from tests.test_doctor import lm_recipe, word_tokenizer


def counted(monkeypatch):
    calls = []
    real = doctor.vocabulary_case
    monkeypatch.setattr(doctor, "vocabulary_case", lambda t, s: calls.append((t, s)) or real(t, s))
    return calls


def test_identical_tokenizers_are_compared_once(tmp_path, monkeypatch):
    recipe = lm_recipe(tmp_path, student_tokenizer=word_tokenizer())  # three loads of one tokenizer
    calls = counted(monkeypatch)
    result = diagnose(recipe)
    assert not result.problems and "identical tokenizers" in [f.message for f in result.findings][0]
    # teacher against student, and the teacher against the data (the student's map is the teacher's)
    assert len(calls) == 2


def test_each_pair_is_compared_at_most_once(tmp_path, monkeypatch):
    small = word_tokenizer(["what", "does", "it"])
    recipe = lm_recipe(tmp_path, student_rows=len(small), student_tokenizer=small)
    calls = counted(monkeypatch)
    errors = [f.message for f in diagnose(recipe).errors]
    assert any("recipe.student.tokenizer: the data is tokenized with" in e for e in errors)
    assert any("superset vocabulary" in e for e in errors)
    pairs = [(id(t), id(s)) for t, s in calls]
    assert len(pairs) == len(set(pairs)) == 3  # teacher-student, teacher-data, student-data
