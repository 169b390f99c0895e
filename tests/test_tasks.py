"""The synthetic suite: deterministic generation, disjoint splits, scorers that accept and reject."""

import pytest

from ptdlib.tasks import FAMILIES, HELDOUT_FAMILY, SPLITS, Query, load_queries, make_split, save_queries, score
from ptdlib.tasks.splits import prompt_bucket


@pytest.mark.parametrize("split", SPLITS)
def test_split_generation_is_deterministic_per_seed(split):
    assert make_split(split, 40, seed=3) == make_split(split, 40, seed=3)
    assert make_split(split, 40, seed=3) != make_split(split, 40, seed=4)


def test_open_family_test_prompts_never_appear_in_train():
    train = {(q.family, q.prompt) for q in make_split("train", 3000)}
    test = [q for q in make_split("test", 500) if FAMILIES[q.family].open_space]
    assert test and not [q for q in test if (q.family, q.prompt) in train]
    assert all(prompt_bucket(q.family, q.prompt) == 9 for q in test)


def test_heldout_family_is_absent_from_training_splits():
    for split in ("train", "calib", "test", "shift_length", "shift_mix"):
        assert HELDOUT_FAMILY not in {q.family for q in make_split(split, 500)}
    assert {q.family for q in make_split("heldout_family", 50)} == {HELDOUT_FAMILY}


def test_length_shift_answers_are_longer_than_training_answers_of_the_same_family():
    train = make_split("train", 3000)
    shifted = make_split("shift_length", 300)
    for fam in {q.family for q in shifted}:
        longest_train = max(q.answer_length for q in train if q.family == fam)
        if fam in ("max", "sum"):  # one-token answers: the shift is in the prompt's list length
            continue
        assert min(q.answer_length for q in shifted if q.family == fam) > longest_train


def test_response_lengths_span_one_to_over_eighty_tokens():
    lengths = [q.answer_length for q in make_split("train", 3000)]
    assert min(lengths) == 1 and max(lengths) >= 80


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_scorer_accepts_the_reference_and_rejects_a_corrupted_answer(family):
    q = next(q for q in make_split("heldout_family" if family == HELDOUT_FAMILY else "test", 400) if q.family == family)
    assert score(q, q.answer) == 1.0
    assert score(q, q.answer + " " + q.answer.split()[0]) == 0.0  # an extra (repeated) word is wrong
    assert score(q, "") == 0.0


def test_animals_scorer_checks_validity_not_one_reference():
    q = Query("x", "test", "animals", "name at least 2 animals", "cat dog")
    assert score(q, "owl fox yak") == 1.0
    assert score(q, "owl") == 0.0  # fewer than asked
    assert score(q, "owl owl") == 0.0  # repeated
    assert score(q, "owl banana") == 0.0  # not an animal


def test_query_files_round_trip(tmp_path):
    qs = make_split("calib", 20)
    save_queries(qs, tmp_path / "q.jsonl")
    assert load_queries(tmp_path / "q.jsonl") == qs


def test_unknown_split_and_family_name_the_choices():
    with pytest.raises(ValueError, match="unknown split 'tset'.*test"):
        make_split("tset", 5)
    with pytest.raises(ValueError, match="must be a positive"):
        make_split("test", 0)


def test_family_weights_change_the_training_mix_but_not_the_prompt_partition():
    import itertools
    from collections import Counter

    from ptdlib.tasks.splits import iter_split

    plain = Counter(q.family for q in itertools.islice(iter_split("train", 0), 3000))
    heavy = list(itertools.islice(iter_split("train", 0, family_weights={"count": 5, "spell": 0}), 3000))
    mix = Counter(q.family for q in heavy)
    assert "spell" not in mix and mix["count"] > 3 * plain["count"]
    assert all(prompt_bucket(q.family, q.prompt) < 8 for q in heavy if FAMILIES[q.family].open_space)


def test_bad_family_weights_name_the_value():
    from ptdlib.tasks.splits import iter_split

    with pytest.raises(ValueError, match=f"'{HELDOUT_FAMILY}'.*does not contain"):
        next(iter_split("train", 0, family_weights={HELDOUT_FAMILY: 2}))
    with pytest.raises(ValueError, match="must be >= 0"):
        next(iter_split("train", 0, family_weights={"count": -1}))
