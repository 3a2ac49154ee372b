"""LSL stream predicates (XPath 1.0 over a stream's info), checked before liblsl sees them.

liblsl resolves a predicate ``P`` by evaluating ``session_id='<SessionID>' and P``, without
brackets. XPath's ``and`` binds tighter than ``or``, so ``name='X' or name='Y'`` becomes
``(session_id='S' and name='X') or name='Y'``: a stream of *any* SessionID named ``Y`` matches,
and a recorder would record another room's stream. :func:`bracketed` therefore always wraps a
predicate in brackets, and :func:`check_predicate` first makes sure it is one well-formed XPath
expression that cannot close those brackets early (``name='X') or (name='Y'``) and holds no
control characters. An invalid predicate is a :class:`PredicateError` with what is wrong and
where, instead of liblsl's ``RuntimeError: could not create continuous resolver``.

The grammar is XPath 1.0's expression grammar (what liblsl's pugixml evaluates): ``or``/``and``,
comparisons, arithmetic, unions, location paths (``desc/channels/channel/label``, ``@attr``,
axes), predicates (``[...]``), string and number literals, and the core function library.
Variables (``$x``) are refused: liblsl defines none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dyadlab import DyadlabError

#: Longest predicate accepted (characters).
MAX_PREDICATE_LENGTH = 1000
#: Deepest nesting of brackets accepted.
_MAX_DEPTH = 50

#: XPath 1.0's core function library.
XPATH_FUNCTIONS = frozenset(
    {
        "last",
        "position",
        "count",
        "id",
        "local-name",
        "namespace-uri",
        "name",
        "string",
        "concat",
        "starts-with",
        "contains",
        "substring-before",
        "substring-after",
        "substring",
        "string-length",
        "normalize-space",
        "translate",
        "boolean",
        "not",
        "true",
        "false",
        "lang",
        "number",
        "sum",
        "floor",
        "ceiling",
        "round",
    }
)
_NODE_TYPES = frozenset({"node", "text", "comment", "processing-instruction"})
_AXES = frozenset(
    {
        "ancestor",
        "ancestor-or-self",
        "attribute",
        "child",
        "descendant",
        "descendant-or-self",
        "following",
        "following-sibling",
        "namespace",
        "parent",
        "preceding",
        "preceding-sibling",
        "self",
    }
)
_OPERATOR_NAMES = frozenset({"and", "or", "mod", "div"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"[^"]*"|'[^']*')
  | (?P<number>\d+(?:\.\d*)?|\.\d+)
  | (?P<op>//|::|\.\.|!=|<=|>=|[()\[\]@,|/=<>+*\-.])
  | (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*(?::[A-Za-z_][A-Za-z0-9_.\-]*)?)
  | (?P<variable>\$)
    """,
    re.VERBOSE,
)


class PredicateError(DyadlabError, ValueError):
    """An LSL predicate that is not one well-formed XPath 1.0 expression."""


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, op, name, operator (and/or/div/mod/* as operators), end
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] in "'\"":
                raise PredicateError(f"unclosed quote at character {position + 1}")
            raise PredicateError(f"unexpected character {text[position]!r} at character {position + 1}")
        kind = match.lastgroup
        assert kind is not None
        if kind == "variable":
            raise PredicateError(f"variables ($...) are not defined in LSL predicates (character {position + 1})")
        if kind != "space":
            value = match.group()
            # XPath's disambiguation: after a token that can end an operand, '*' and the names
            # and/or/div/mod are operators.
            previous = tokens[-1] if tokens else None
            operand_ended = previous is not None and not (
                previous.kind == "operator"
                or (previous.kind == "op" and previous.text in ("@", "::", "(", "[", ",", "/", "//", "|", "+", "-"))
                or (previous.kind == "op" and previous.text in ("=", "!=", "<", "<=", ">", ">="))
            )
            if operand_ended and (value == "*" or (kind == "name" and value in _OPERATOR_NAMES)):
                kind = "operator"
            tokens.append(_Token(kind, value, position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    """Recursive descent over XPath 1.0's expression grammar; only checks, builds nothing."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.depth = 0

    # -- helpers ---------------------------------------------------------------------------
    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.token
        self.index += 1
        return token

    def at(self, kind: str, *texts: str) -> bool:
        return self.token.kind == kind and (not texts or self.token.text in texts)

    def expect(self, kind: str, text: str) -> None:
        if not self.at(kind, text):
            raise self.error(f"expected {text!r}")
        self.take()

    def error(self, what: str) -> PredicateError:
        token = self.token
        found = "the end" if token.kind == "end" else repr(token.text)
        return PredicateError(f"{what} at character {token.position + 1}, found {found}")

    # -- grammar ---------------------------------------------------------------------------
    def parse(self) -> None:
        self.expression()
        if not self.at("end"):
            if self.at("op", ")", "]"):
                raise self.error("unbalanced closing bracket")
            raise self.error("unexpected text after a complete expression")

    def expression(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"more than {_MAX_DEPTH} nested brackets")
        try:
            self.binary(0)
        finally:
            self.depth -= 1

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("or",),
        ("and",),
        ("=", "!="),
        ("<", "<=", ">", ">="),
        ("+", "-"),
        ("*", "div", "mod"),
    )

    def binary(self, level: int) -> None:
        if level == len(self._LEVELS):
            self.unary()
            return
        self.binary(level + 1)
        operators = self._LEVELS[level]
        while (self.token.kind in ("operator", "op")) and self.token.text in operators:
            if self.token.kind == "op" and self.token.text == "*":
                break  # a name test, not multiplication (cannot happen after an operand)
            self.take()
            self.binary(level + 1)

    def unary(self) -> None:
        while self.at("op", "-"):
            self.take()
        self.path()
        while self.at("op", "|"):
            self.take()
            self.path()

    def path(self) -> None:
        token = self.token
        if token.kind in ("string", "number") or (token.kind == "op" and token.text == "("):
            self.primary()
            self.predicates()
            if self.at("op", "/", "//"):
                self.take()
                self.relative_path()
            return
        if token.kind == "name" and self.peek().kind == "op" and self.peek().text == "(":
            if token.text not in _NODE_TYPES:
                self.function_call()
                self.predicates()
                if self.at("op", "/", "//"):
                    self.take()
                    self.relative_path()
                return
        if self.at("op", "/"):
            self.take()
            if self._starts_step():
                self.relative_path()
            return
        if self.at("op", "//"):
            self.take()
            self.relative_path()
            return
        if not self._starts_step():
            raise self.error("expected a value, a path or a function call")
        self.relative_path()

    def primary(self) -> None:
        token = self.take()
        if token.kind == "op" and token.text == "(":
            self.expression()
            self.expect("op", ")")

    def function_call(self) -> None:
        name = self.take()
        if name.text not in XPATH_FUNCTIONS:
            self.index -= 1
            raise self.error(f"unknown function {name.text}() (XPath 1.0 has {', '.join(sorted(XPATH_FUNCTIONS))})")
        self.expect("op", "(")
        if not self.at("op", ")"):
            self.expression()
            while self.at("op", ","):
                self.take()
                self.expression()
        self.expect("op", ")")

    def _starts_step(self) -> bool:
        token = self.token
        return token.kind == "name" or (token.kind in ("op", "operator") and token.text in (".", "..", "@", "*"))

    def relative_path(self) -> None:
        self.step()
        while self.at("op", "/", "//"):
            self.take()
            self.step()

    def step(self) -> None:
        if self.at("op", ".", ".."):
            self.take()
            return
        if self.at("op", "@"):
            self.take()
        elif self.token.kind == "name" and self.peek().kind == "op" and self.peek().text == "::":
            axis = self.take()
            if axis.text not in _AXES:
                self.index -= 1
                raise self.error(f"unknown axis {axis.text}::")
            self.take()
        self.node_test()
        self.predicates()

    def node_test(self) -> None:
        token = self.token
        if token.kind in ("op", "operator") and token.text == "*":
            self.take()
            return
        if token.kind != "name":
            raise self.error("expected a name")
        self.take()
        if token.text in _NODE_TYPES and self.at("op", "("):
            self.take()
            if token.text == "processing-instruction" and self.token.kind == "string":
                self.take()
            self.expect("op", ")")

    def predicates(self) -> None:
        while self.at("op", "["):
            self.take()
            self.expression()
            self.expect("op", "]")


def check_predicate(predicate: str) -> str:
    """Check that ``predicate`` is one well-formed XPath 1.0 expression; return it stripped.

    Raises
    ------
    PredicateError
        Empty, too long, a control character, unbalanced brackets or quotes, an unknown
        function, a variable, or anything else that is not an XPath expression.
    """
    if not isinstance(predicate, str):
        raise PredicateError(f"an LSL predicate is text, got {type(predicate).__name__}")
    text = predicate.strip()
    if not text:
        raise PredicateError("the predicate is empty; give e.g. name='D01-Markers'")
    if len(text) > MAX_PREDICATE_LENGTH:
        raise PredicateError(f"the predicate is {len(text)} characters long (at most {MAX_PREDICATE_LENGTH})")
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise PredicateError(f"the predicate holds the control character {bad!r}")
    try:
        _Parser(text).parse()
    except PredicateError as error:
        raise PredicateError(
            f"{predicate!r} is not a valid LSL predicate: {error}. Write an XPath 1.0 expression over the "
            "stream's info, e.g. \"name='D01-Markers' and hostname='lab-pc-2'\""
        ) from None
    return text


def bracketed(predicate: str) -> str:
    """``(predicate)``, checked: what dyadlab hands to liblsl, so that the ``session_id='...' and``
    liblsl puts in front applies to the whole predicate."""
    return f"({check_predicate(predicate)})"
