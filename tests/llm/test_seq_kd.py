"""Sequence-level KD: teacher-generated datasets, reproducible from their seed, with provenance."""

import pytest
import torch

from kdforge.llm.data import BOS, EOS, PAD, tiny_causal_lm
from kdforge.llm.seq_kd import Decoding, continuation_lengths, generate_dataset, load_generated, save_generated


@pytest.fixture(scope="module")
def teacher():
    return tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=50, seed=3).eval()  # no dropout


def prompts(n=6, length=3):
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.full((n, 1), BOS), torch.randint(4, 50, (n, length - 1), generator=g)], dim=1)


def test_sampled_dataset_is_reproducible_from_its_seed_and_changes_with_it(teacher):
    decoding = Decoding("sample", max_new_tokens=8, top_k=20)
    first, prov1 = generate_dataset(teacher, prompts(), decoding, seed=7, batch_size=4)
    torch.manual_seed(123)  # the caller's random state does not matter ...
    second, prov2 = generate_dataset(teacher, prompts(), decoding, seed=7, batch_size=4)
    assert torch.equal(first.tensors["input_ids"], second.tensors["input_ids"]) and prov1 == prov2
    other, prov3 = generate_dataset(teacher, prompts(), decoding, seed=8, batch_size=4)
    assert not torch.equal(first.tensors["input_ids"], other.tensors["input_ids"])
    assert prov3["outputs_sha256"] != prov1["outputs_sha256"]
    state = torch.random.get_rng_state()
    generate_dataset(teacher, prompts(), decoding, seed=7)
    assert torch.equal(state, torch.random.get_rng_state())  # ... and is left untouched


def test_greedy_rows_are_the_teachers_argmax_continuations(teacher):
    data, provenance = generate_dataset(teacher, prompts(2), Decoding("greedy", max_new_tokens=5))
    ids = data.tensors["input_ids"]
    assert ids.shape == (2, 8) and torch.equal(ids[:, :3], prompts(2))
    for row in range(2):  # step by step: each generated token is the argmax given the tokens before it
        for t in range(3, int(data.tensors["attention_mask"][row].sum())):
            logits = teacher(input_ids=ids[row:row + 1, :t]).logits[0, -1]
            assert int(logits.argmax()) == int(ids[row, t])
    labels = data.tensors["labels"]
    assert (labels[:, :2] == -100).all() and torch.equal(labels[:, 2], ids[:, 3])  # prompt tokens do not count
    assert provenance["decoding"]["strategy"] == "greedy" and len(provenance["teacher_fingerprint"]) == 64
    beam, _ = generate_dataset(teacher, prompts(2), Decoding("beam", max_new_tokens=5, num_beams=3))
    assert beam.tensors["input_ids"].shape == (2, 8)


def test_lengths_stop_after_the_first_eos():
    rows = torch.tensor([[BOS, 5, 6, EOS, 7, 8], [BOS, 5, 6, 7, 8, 9]])
    assert continuation_lengths(rows, 2).tolist() == [4, 6]


def test_save_and_load_keep_rows_and_provenance(teacher, tmp_path):
    data, provenance = generate_dataset(teacher, prompts(3), Decoding("greedy", max_new_tokens=4))
    loaded, prov = load_generated(save_generated(data, provenance, tmp_path / "gen"))
    assert prov == provenance and all(torch.equal(loaded.tensors[k], v) for k, v in data.tensors.items())
    assert (loaded.tensors["input_ids"][~loaded.tensors["attention_mask"].bool()] == PAD).all()
    (tmp_path / "gen" / "provenance.json").write_text((tmp_path / "gen" / "provenance.json").read_text()
                                                      .replace(provenance["outputs_sha256"], "0" * 64))
    with pytest.raises(ValueError, match="outputs_sha256"):
        load_generated(tmp_path / "gen")


def test_bad_decoding_is_rejected():
    with pytest.raises(ValueError, match="strategy"):
        Decoding("nucleus")


def test_unigram_f1_by_hand():
    from kdforge.llm.seq_kd import unigram_f1

    assert unigram_f1([1, 2, 3], [1, 2, 3]) == 1.0
    assert unigram_f1([1, 1, 2], [1, 3]) == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert unigram_f1([], [1]) == 0.0 and unigram_f1([4], [5]) == 0.0


def test_interpolated_variant_picks_the_beam_candidate_closest_to_the_reference(teacher):
    from kdforge.llm.seq_kd import interpolated_dataset

    p = prompts(2)
    beams = teacher.generate(input_ids=p[:1], attention_mask=torch.ones_like(p[:1]), num_beams=3,
                             num_return_sequences=3, do_sample=False, max_new_tokens=5, eos_token_id=EOS,
                             pad_token_id=PAD)
    last = [t for t in beams[2, 3:].tolist() if t not in (PAD, EOS)]  # the lowest-ranked beam's continuation
    assert last != [t for t in beams[0, 3:].tolist() if t not in (PAD, EOS)]
    data, provenance = interpolated_dataset(teacher, p, [last, [7, 8]], num_beams=3, max_new_tokens=5)
    row = data.tensors["input_ids"][0]
    assert [t for t in row[3:].tolist() if t not in (PAD, EOS)] == last  # F1 = 1: the reference itself
    assert provenance["decoding"]["num_beams"] == 3 and provenance["mean_similarity"] >= 0.5
    with pytest.raises(ValueError, match="references"):
        interpolated_dataset(teacher, p, [last], num_beams=3, max_new_tokens=5)
