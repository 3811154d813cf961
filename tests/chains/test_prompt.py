"""PromptTemplate: variables, partials, clear errors, the sandbox's limits."""

from __future__ import annotations

import pytest

from corral.chains import PromptTemplate
from corral.chat.limits import RenderLimits
from corral.errors import TemplateError


def test_variables_and_render() -> None:
    t = PromptTemplate("Translate to {{ lang }}:\n{% for w in words %}- {{ w }}\n{% endfor %}")
    assert t.variables == {"lang", "words"}
    assert t.render(lang="French", words=["a", "b"]) == "Translate to French:\n- a\n- b\n"
    # a mapping and keywords combine; keywords win
    assert t.render({"lang": "x", "words": []}, lang="German") == "Translate to German:\n"


def test_values_are_not_html_escaped() -> None:
    assert PromptTemplate("{{ code }}").render(code="<a & b>") == "<a & b>"


def test_missing_variables_are_named() -> None:
    t = PromptTemplate("{{ a }} {{ b }} {{ c }}")
    with pytest.raises(TemplateError, match="not given: b, c"):
        t.render(a=1)


def test_partial_fixes_some_variables() -> None:
    t = PromptTemplate("{{ greeting }}, {{ name }}!")
    hi = t.partial(greeting="Hi")
    assert hi.variables == {"name"}
    assert hi.render(name="Ann") == "Hi, Ann!"
    assert t.variables == {"greeting", "name"}  # the original is unchanged


def test_syntax_error_is_a_template_error_with_line() -> None:
    with pytest.raises(TemplateError, match="line 2"):
        PromptTemplate("ok\n{{ broken ")


def test_undefined_attribute_raises_instead_of_printing_nothing() -> None:
    with pytest.raises(TemplateError, match="no attribute"):
        PromptTemplate("{{ doc.subject }}").render(doc="plain string")


def test_sandbox_limits_apply() -> None:
    t = PromptTemplate("{{ 'x' * n }}", limits=RenderLimits(max_output_chars=1000))
    assert len(t.render(n=10)) == 10
    with pytest.raises(TemplateError):
        t.render(n=10**9)
    with pytest.raises(TemplateError):
        PromptTemplate("{{ ().__class__.__bases__ }}").render()
