"""The LLM quality benchmark's scorer, its questions, and one run of the embedded SmolLM2 through it."""

from __future__ import annotations

import pytest

from bench.llm_quality import (
    ModelRun,
    chinese_numbers,
    contains_form,
    echoes_prompt,
    english_numbers,
    normalise,
    repeated_ngram_ratio,
    run,
    score,
)
from bench.llm_questions import CHINESE, ENGLISH, QUESTIONS, Question

SPIDER = Question("en", "How many legs does a spider have?", ("8", "eight"), ("4 legs", "six legs"))
SPIDER_ZH = Question("zh", "蜘蛛有几条腿？", ("八", "8"), ("六条", "4条"))
PARIS = Question("en", "What's the capital of France?", ("Paris",))


@pytest.mark.parametrize(
    ("spoken", "digits"),
    [
        ("eight", "8"),
        ("twenty-four hours", "24 hours"),
        ("seven hundred and twenty one", "721"),
        ("a hundred", "100"),
        ("one thousand two hundred", "1200"),
        ("two hundred thousand", "200000"),
        ("2 thousand", "2000"),
        ("one two three", "1 2 3"),  # three numbers, not six
        ("twenty twenty", "20 20"),
    ],
)
def test_english_number_words_become_digits(spoken: str, digits: str) -> None:
    assert normalise(spoken) == digits


@pytest.mark.parametrize(
    ("numeral", "digits"),
    [
        ("八", "8"),
        ("十", "10"),
        ("十二个月", "12个月"),
        ("二十四", "24"),
        ("三百六十六天", "366天"),
        ("一百零五", "105"),
        ("一千克", "1000克"),
        ("两个", "2个"),
        ("一九四九年", "1949年"),
        ("一万两千", "12000"),
    ],
)
def test_chinese_numerals_become_digits(numeral: str, digits: str) -> None:
    assert chinese_numbers(numeral) == digits


def test_normalise_folds_case_marks_width_and_script() -> None:
    assert normalise("The capital is PARIS!") == "the capital is paris"
    assert normalise("It weighs 1,000 grams, or 3.5 pounds.") == "it weighs 1000 grams or 3.5 pounds"
    assert normalise("ＣＯ₂") == "co2"
    assert normalise("水在攝氏一百度沸騰。") == "水在摄氏100度沸腾"
    assert english_numbers("no numbers here") == "no numbers here"


def test_forms_match_as_whole_words_and_numbers() -> None:
    assert contains_form(normalise("A spider has 8 legs."), "eight")
    assert contains_form(normalise("Spiders have eight legs."), "8")
    assert not contains_form(normalise("The answer is 18."), "8")
    assert not contains_form(normalise("eighteen"), "eight")
    assert not contains_form(normalise("about 8.5 of them"), "8")
    assert not contains_form(normalise("Parisian food"), "Paris")
    assert contains_form(normalise("蜘蛛有八条腿。"), "8")
    assert contains_form(normalise("蜘蛛有8条腿。"), "八")
    assert not contains_form(normalise("蜘蛛有十八条腿。"), "八")


def test_a_correct_answer_is_correct() -> None:
    verdict = score(SPIDER, "A spider has eight legs.")
    assert verdict.correct and not (verdict.off_language or verdict.echoes or verdict.loops)
    assert score(PARIS, "The capital of France is Paris.").correct
    assert score(SPIDER_ZH, "蜘蛛有八条腿。").correct
    assert score(SPIDER_ZH, "蜘蛛有8条腿。").correct


def test_wrong_answers_and_rejected_forms_are_not_correct() -> None:
    assert not score(SPIDER, "A spider has four legs.").correct
    assert not score(SPIDER, "Eighteen.").correct
    assert not score(SPIDER, "It has four legs, or maybe eight.").correct  # every option listed
    assert not score(SPIDER_ZH, "蜘蛛有六条腿，也可能是八条。").correct
    assert not score(PARIS, "").correct


def test_answers_in_another_language_are_flagged() -> None:
    assert score(Question("zh", "法国的首都是哪里？", ("巴黎",)), "The capital is Paris.").off_language
    assert score(PARIS, "法国的首都是巴黎。").off_language
    assert not score(SPIDER_ZH, "蜘蛛有8条腿。").off_language
    assert not score(PARIS, "").off_language


def test_loops_are_flagged() -> None:
    assert repeated_ngram_ratio("The capital of France is Paris.") == 0.0
    looping = "北京是一个美丽的美丽的美丽；；；；；；；；；；；；；；；；；；；；"
    assert repeated_ngram_ratio(looping) > 0.5
    assert score(Question("zh", "中国的首都是哪里？", ("北京",)), looping).loops
    english_loop = "I like it. I like it. I like it. I like it. I like it."
    assert score(PARIS, english_loop).loops and not score(PARIS, english_loop).correct
    assert not score(SPIDER, "A spider has eight legs, and each leg has seven segments.").loops


def test_echoes_of_the_question_are_flagged() -> None:
    assert echoes_prompt("我晚上睡不着，有什么好办法吗？", "我晚上睡不着，有什么好办法吗？")
    assert echoes_prompt("What is the capital of Japan? Tokyo.", "Um, what is the capital of Japan?")
    assert not echoes_prompt("The capital of Japan is Tokyo.", "Um, what is the capital of Japan?")
    assert not echoes_prompt("世界上最高的山是珠穆朗玛峰。", "世界上最高的山是哪座？")
    assert not echoes_prompt("三加五等于八。", "三加五等于几？")
    walk = "Who was the first person to walk on the moon?"
    assert not echoes_prompt("Neil Armstrong was the first person to walk on the moon.", walk)
    assert echoes_prompt("法国的首都是哪里？The answer is 法国.", "嗯，法国的首都是哪里？")


def test_every_question_can_be_answered_and_gives_nothing_away() -> None:
    assert len(ENGLISH) >= 50 and len(CHINESE) >= 20
    assert len({q.prompt for q in QUESTIONS}) == len(QUESTIONS)
    for question in QUESTIONS:
        assert question.language in ("en", "zh") and question.accept, question
        asked = normalise(question.prompt)
        assert not any(contains_form(asked, form) for form in question.accept + question.reject), question
        # an accepted form is accepted, and a rejected one is not, as a one-line answer
        assert score(question, question.accept[0]).correct, question
        for form in question.reject:
            assert not score(question, f"{question.accept[0]} {form}").correct, question


def test_chinese_questions_accept_characters_and_digits() -> None:
    for question in CHINESE:
        assert script_of(question.prompt) == "zh"
        numbers = [f for f in question.accept if normalise(f).isdigit()]
        if numbers:
            assert any(f.isdigit() for f in numbers) and any(not f.isdigit() for f in numbers), question


def script_of(text: str) -> str | None:
    from backend.app.text.chinese import script_language

    return script_language(text)


def test_the_embedded_model_runs_through_the_bench() -> None:
    """SmolLM2 on three questions, end to end (whether it is right is the benchmark's business)."""
    from backend.app.backends.embedded import SMALL_LLM
    from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
    from backend.app.backends.registry import load_tts
    from backend.app.core.config import Settings
    from backend.app.text.normalize import clean_for_speech, has_speakable_content

    settings = Settings(_env_file=None)
    questions = (ENGLISH[0], ENGLISH[13], CHINESE[0])
    engine = LlamaCppChatBackend(SMALL_LLM, context_tokens=1024)
    try:
        result = run(engine, "smol", questions, settings.llm.system_prompt, voice=load_tts(settings))
    finally:
        engine.close()
    assert isinstance(result, ModelRun) and [a.question for a in result.answers] == list(questions)
    assert result.correct("en") == sum(a.verdict.correct for a in result.answers[:2])
    assert result.correct("zh") == int(result.answers[2].verdict.correct)
    assert len(result.of("en")) == 2 and len(result.of("zh")) == 1
    for answer in result.answers:
        assert answer.text and answer.tokens > 0
        assert answer.verdict == score(answer.question, answer.text)
        assert 0 <= answer.first_token_s <= answer.first_piece_s and answer.other_cpu >= 0
        assert bool(answer.first_piece) == has_speakable_content(clean_for_speech(answer.text))
    english = result.answers[0]
    if english.first_piece:  # the default voice speaks English: a first audio
        assert english.tts_s is not None and english.first_audio_s == english.first_piece_s + english.tts_s
