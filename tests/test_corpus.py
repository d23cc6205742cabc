from kdforge.data.corpus import _is_sentence, stdlib_sentences


def test_stdlib_gives_thousands_of_distinct_sentences_deterministically():
    sentences = stdlib_sentences()
    assert len(sentences) > 5000 and len(set(sentences)) == len(sentences)
    assert stdlib_sentences(limit=20, seed=3) == stdlib_sentences(limit=20, seed=3)
    assert stdlib_sentences(limit=20, seed=3) != stdlib_sentences(limit=20, seed=4)
    assert all(_is_sentence(s) for s in sentences[:200])


def test_sentence_filter():
    assert _is_sentence("Return the number of items in the queue right now.")
    assert not _is_sentence("x = 1")
    assert not _is_sentence("return the number of items in the queue right now.")  # no capital
    assert not _is_sentence("Return X Y Z W V U T S.")  # mostly capitalised words: not prose
