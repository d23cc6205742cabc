"""Rows too short for any text are refused once, before any sample is read (or any tokenizer trained), and
the error names the side's own field: `teacher_seq_len` for the teacher's rows."""

import pytest

import kdforge.data.lm as lm
from kdforge.app.data import load_recipe_data
from kdforge.lm.align import AlignmentError
from kdforge.lm.cross_data import check_row_lengths, paired_rows
from kdforge.recipe import DataSpec


def test_a_short_teacher_row_names_teacher_seq_len_and_its_fix():
    with pytest.raises(AlignmentError, match=r"^data.teacher_seq_len: the teacher's rows of 2 tokens leave no room "
                                             r"for text beside BOS and EOS; set data.teacher_seq_len to 3 or more\.$"):
        check_row_lengths(24, 2)
    check_row_lengths(24, 2, teacher_bos=False)  # EOS alone: one token of text fits
    with pytest.raises(AlignmentError, match=r"^data.seq_len: the student's rows of 2 tokens .* set data.seq_len to "
                                             r"3 or more"):
        check_row_lengths(2, 24)
    with pytest.raises(AlignmentError, match=r"^data.seq_len: the teacher's rows of 2 tokens"):  # it follows seq_len
        check_row_lengths(2, None, student_bos=False)


def test_paired_rows_checks_once_before_any_sample():
    """No tokenizer is touched: the lengths are refused before the first text is read (no text at all here)."""
    with pytest.raises(AlignmentError, match=r"^data.teacher_seq_len: "):
        paired_rows([], object(), object(), seq_len=24, teacher_seq_len=1)


def test_the_recipe_names_recipe_data_args_teacher_seq_len_before_training_a_tokenizer(monkeypatch):
    monkeypatch.setattr(lm, "train_lm_tokenizer", lambda *a, **k: pytest.fail("a tokenizer was trained"))
    spec = DataSpec(source="text:stdlib_lm", args={"limit": 50, "tokenizer": "unigram", "teacher_tokenizer": "bpe",
                                                   "seq_len": 24, "teacher_seq_len": 2})
    with pytest.raises(AlignmentError, match=r"^recipe.data.args.teacher_seq_len: .* set "
                                             r"recipe.data.args.teacher_seq_len to 3 or more"):
        load_recipe_data(spec, None)
