"""The `>>>` examples in docstrings and in docs/python-api.md run and print what they show (each
builds its own tiny untrained tokenizer, so they are self-contained and take seconds)."""
from __future__ import annotations

import copy
import doctest
import importlib
import io
from pathlib import Path

import pytest

MODULES = ["vqkit", "vqkit.models.waveforms", "vqkit.models.tokenizer"]
PAGES = [Path(__file__).parents[1] / "docs" / "python-api.md"]
FLAGS = doctest.NORMALIZE_WHITESPACE   # long lines (messages) may wrap


def run(test: doctest.DocTest) -> tuple[doctest.TestResults, str]:
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=out.write)
    return runner.summarize(verbose=False), out.getvalue()


def examples(name: str) -> list[doctest.DocTest]:
    return [t for t in doctest.DocTestFinder().find(importlib.import_module(name)) if t.examples]


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_and_print_what_they_show(name):
    tests = examples(name)
    assert tests, f"{name} has no >>> examples"
    for test in tests:
        result, report = run(test)
        assert result.failed == 0, f"{test.name}:\n{report}"
        assert result.attempted == len(test.examples)


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_examples_of_a_docs_page_run_and_print_what_they_show(page):
    test = doctest.DocTestParser().get_doctest(page.read_text(), {}, page.name, str(page), 0)
    assert len(test.examples) > 10
    result, report = run(test)
    assert result.failed == 0, f"{page}:\n{report}"


def test_an_example_showing_a_wrong_output_fails():
    """The check is real: the first examples of models/waveforms.py with one expected output changed."""
    test = next(t for t in examples("vqkit.models.waveforms") if t.name == "vqkit.models.waveforms")
    shown = next(i for i, e in enumerate(test.examples) if "22050, 4, 2" in e.want)
    wrong = copy.copy(test)
    wrong.examples = [copy.copy(e) for e in test.examples[: shown + 1]]
    wrong.examples[shown].want = "(22050, 4, 3)\n"
    result, report = run(wrong)
    assert result.failed == 1 and "Expected:\n    (22050, 4, 3)\nGot:\n    (22050, 4, 2)" in report
