"""The language-consistency reward: word segmentation, scripts, Latin word lists."""

import pytest

from r1fast import rewards

ZH = "我们先计算"  # 5 Han characters = 5 words
JA = "これは答えです"  # hiragana only: 7 words
RU = "Ответ равен четырём"
AR = "الجواب هو أربعة"

CASES = [
    ("The answer is four because two plus two.", "en", 1.0),
    ("La respuesta es cuatro porque dos más dos.", "es", 1.0),
    ("Die Antwort ist vier, weil zwei plus zwei.", "de", 1.0),
    ("La réponse est quatre parce que deux plus deux.", "fr", 1.0),
    (ZH, "zh", 1.0),
    (JA, "ja", 1.0),
    (RU, "ru", 1.0),
    (AR, "ar", 1.0),
    (ZH + " the answer", "zh", 5 / 7),
    (RU + " the", "ru", 3 / 4),
    ("The answer is 42.", "zh", 0.0),
    ("12 + 30 = 42", "en", 0.0),  # no words at all
    ("", "en", 0.0),
]


@pytest.mark.parametrize("text,lang,expected", CASES)
def test_language_consistency_table(text, lang, expected):
    assert rewards.language_consistency_reward(None, [text], language=lang, think_only=False) == [
        pytest.approx(expected)
    ]


def test_latin_languages_are_told_apart_by_word_lists():
    es = "La respuesta es el número que buscamos"
    de = "Die Antwort ist die Zahl, die wir suchen"
    fr = "La réponse est le nombre que nous cherchons"
    for text, own in ((es, "es"), (de, "de"), (fr, "fr")):
        scores = {lang: rewards.language_consistency_reward(None, [text], language=lang)[0]
                  for lang in ("en", "es", "de", "fr")}
        assert max(scores, key=scores.get) == own, scores
        assert scores["en"] < 0.7


def test_mixed_language_chain_of_thought_scores_the_share():
    text = "<think>First we add the numbers. 然后我们</think><answer>5</answer>"
    (score,) = rewards.language_consistency_reward(None, [text], language="en")
    # 5 English words, 4 Han characters
    assert score == pytest.approx(5 / 9)


def test_think_only_and_per_sample_languages():
    texts = ["<think>the answer</think><answer>答案</answer>", "<think>答案</think>"]
    assert rewards.language_consistency_reward(None, texts, language=["en", "zh"]) == [1.0, 1.0]
    assert rewards.language_consistency_reward(None, texts[:1], language="en", think_only=False) == [0.5]


def test_apostrophes_and_combining_marks_stay_in_words():
    # "don't" is one word; e + combining acute is one French word
    assert rewards.language_consistency_reward(None, ["don't"], language="en", think_only=False) == [1.0]
    assert rewards.language_consistency_reward(None, ["re\u0301ponse"], language="fr", think_only=False) == [1.0]


def test_unknown_language_raises():
    with pytest.raises(ValueError):
        rewards.language_consistency_reward(None, ["x"], language="xx")
    with pytest.raises(ValueError):
        rewards.language_consistency_reward(None, ["x", "y"], language=["en"])


def test_batch_is_deterministic_across_thread_counts():
    texts = [f"<think>step {i}: the answer es la respuesta {'我们' * (i % 4)}</think>" for i in range(1500)]
    langs = ["en", "es", "zh"] * 500
    one = rewards.language_consistency_reward(None, texts, language=langs, threads=1)
    assert one == rewards.language_consistency_reward(None, texts, language=langs, threads=4)
