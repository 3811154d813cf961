"""Constrained decoding: JSON Schema, GBNF, Lark and regex grammars as a logits mask.

Built on llguidance (chosen over xgrammar in bench/grammar_libs.py: a schema compiles in
about a millisecond instead of 0.4-4 s, the package has no dependencies and imports in
50 ms). `make_constraint(tokenizer, GrammarSpec.json_schema(schema))` gives a per-request
`LogitsConstraint` for `Model.generate_with` or a scheduler `Request`; `to_llguidance`
checks a spec up front and raises `GrammarError` naming the problem.
"""

from corral.grammar.constraint import GrammarConstraint, make_constraint
from corral.grammar.spec import GrammarError, GrammarKind, GrammarSpec, to_llguidance

__all__ = [
    "GrammarConstraint",
    "GrammarError",
    "GrammarKind",
    "GrammarSpec",
    "make_constraint",
    "to_llguidance",
]
