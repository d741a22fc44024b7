"""m2m100's languages (issue 11, part C): every code the model knows is accepted, with its
English name and region tags, checked when the job loads and per row, and the emulator
accepts exactly the same set."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.catalog.languages import LANGUAGE_CODES, LANGUAGES, normalize_language
from pipelines.core.errors import JobError
from pipelines.emulator.envelope import ApiError
from pipelines.emulator.languages import language_code
from pipelines.job.load import load_job

# The model card's "Languages covered" (facebook/m2m100_1.2B): 100 ISO 639 codes.
MODEL_CARD = (
    "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd "
    "gl gu ha he hi hr ht hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg "
    "mk ml mn mr ms my ne nl no ns oc or pa pl ps pt ro ru sd si sk sl so sq sr ss su sv sw "
    "ta th tl tn tr uk ur uz vi wo xh yi yo zh zu"
).split()


def write_job(tmp_path: Path, target: str) -> Path:
    (tmp_path / "in.csv").write_text("id,text\n1,hello\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: t\n"
        "source: {kind: csv, path: in.csv, key: id}\n"
        "task:\n  kind: translate\n  model: '@cf/meta/m2m100-1.2b'\n  input: text\n"
        f"  params: {{target_lang: '{target}'}}\n"
        "output: {path: out.parquet}\n"
    )
    return job


def test_every_language_of_the_model_card_is_known() -> None:
    assert sorted(LANGUAGE_CODES) == sorted(MODEL_CARD)
    assert len(LANGUAGE_CODES) == 100


@pytest.mark.parametrize("code", MODEL_CARD)
def test_code_name_and_region_tag_normalise_to_the_code(code: str) -> None:
    assert normalize_language(code) == code
    assert normalize_language(code.upper()) == code
    assert normalize_language(LANGUAGES[code].title()) == code
    assert normalize_language(f"{code}-XY") == code
    assert normalize_language(f"{code}_Latn") == code


@pytest.mark.parametrize(
    ("written", "code"),
    [("pt-BR", "pt"), ("zh-Hans", "zh"), ("Swahili", "sw"), ("yo", "yo"), ("iw", "he"),
     ("Farsi", "fa"), ("scottish gaelic", "gd"), ("Haitian Creole", "ht"), ("fil", "tl")],
)  # fmt: skip
def test_common_spellings(written: str, code: str) -> None:
    assert normalize_language(written) == code


@pytest.mark.parametrize("bad", ["klingon", "xx", "xx-YY", "", "english-ish", "e"])
def test_unknown_languages_are_refused(bad: str) -> None:
    assert normalize_language(bad) is None


@pytest.mark.parametrize("target", ["sw", "Yoruba", "ceb", "uz", "pt-BR"])
def test_a_job_may_target_any_language_the_model_knows(tmp_path: Path, target: str) -> None:
    job = load_job(write_job(tmp_path, target))
    assert job.task.params["target_lang"] == normalize_language(target)


def test_an_unknown_language_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="unsupported language 'klingon'"):
        load_job(write_job(tmp_path, "klingon"))


def test_the_emulator_accepts_exactly_the_same_languages() -> None:
    for code in MODEL_CARD:
        assert language_code(code, "target_lang") == code
        assert language_code(LANGUAGES[code], "target_lang") == code
    for bad in ("klingon", "xx-YY"):
        with pytest.raises(ApiError):
            language_code(bad, "target_lang")
