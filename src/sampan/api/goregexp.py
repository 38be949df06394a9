"""Regular expressions with Go's ``regexp`` semantics (RE2 syntax), for patterns users write.

Kubernetes evaluates user-supplied patterns (a CRD schema's ``pattern``) with Go's ``regexp``
package: RE2 syntax, linear-time matching, inline flag groups anywhere (``a((?i)b)c``), no
backreferences or look-around. Python's ``re`` accepts a different language, so every such
pattern goes through here, backed by RE2 itself (the ``google-re2`` package).

Public API::

    compile_go(pattern) -> Regexp      # cached; raises GoRegexpError
    search(pattern, text) -> bool      # regexp.MatchString: unanchored, like Go

Invariants:

- Compiled patterns are cached in a bounded LRU (``CACHE_SIZE`` entries; each RE2 program is
  capped by RE2's own memory budget), so a pattern is compiled once however many objects it
  checks; invalid patterns are not cached (they raise).
- ``GoRegexpError``'s message is worded as Go words a ``regexp.Compile`` error:
  ``error parsing regexp: missing closing ): `a(```. The error code text is translated from
  RE2's to Go's; the quoted fragment is RE2's (Go quotes the same fragment in most cases).
- RE2 never writes to stderr here (``log_errors`` is off).
"""

from __future__ import annotations

import functools
from typing import Any

import re2

__all__ = ["CACHE_SIZE", "GoRegexpError", "Regexp", "compile_go", "search"]

CACHE_SIZE = 512
"""Compiled patterns kept (least recently used go first)."""

Regexp = Any
"""A compiled RE2 pattern (``re2._Regexp``: ``search``, ``match``, ``fullmatch``, ...)."""

# RE2's error code texts -> Go regexp/syntax's ErrorCode texts.
_GO_CODE_TEXT = {
    "unexpected error": "regexp/syntax: internal error",
    "invalid escape sequence": "invalid escape sequence",
    "invalid character class": "invalid character class",
    "invalid character class range": "invalid character class range",
    "missing ]": "missing closing ]",
    "missing )": "missing closing )",
    "unexpected )": "unexpected )",
    "trailing \\": "trailing backslash at end of expression",
    "no argument for repetition operator": "missing argument to repetition operator",
    "invalid repetition size": "invalid repeat count",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid UTF-8": "invalid UTF-8",
    "invalid named capture group": "invalid named capture",
    "pattern too large - compile failed": "expression too large",
}


class GoRegexpError(ValueError):
    """A pattern Go's ``regexp.Compile`` refuses; ``str()`` is Go's error text."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


_OPTIONS = _options()


def _go_message(pattern: str, raw: str) -> str:
    code, sep, arg = raw.partition(": ")
    if not sep:
        code, arg = raw, pattern
    if code == "invalid perl operator" and arg.startswith("(?<"):
        # Go reads "(?<" as the start of a named capture (look-behind does not exist there):
        # it quotes up to the closing ">", or the rest of the pattern when there is none.
        rest = pattern[pattern.find(arg) :] if arg in pattern else arg
        end = rest.find(">")
        return (
            f"error parsing regexp: invalid named capture: `{rest if end < 0 else rest[: end + 1]}`"
        )
    go_code = _GO_CODE_TEXT.get(code, code)
    return f"error parsing regexp: {go_code}: `{arg}`"


@functools.lru_cache(maxsize=CACHE_SIZE)
def compile_go(pattern: str) -> Regexp:
    """``pattern`` compiled with Go's syntax (cached); GoRegexpError when Go would refuse it."""
    if "\\C" in pattern.replace("\\\\", ""):
        # RE2 (C++) has \C (any byte); Go's parser does not.
        raise GoRegexpError("error parsing regexp: invalid escape sequence: `\\C`")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise GoRegexpError(_go_message(pattern, str(detail))) from None


def search(pattern: str, text: str) -> bool:
    """Go's ``regexp.MatchString``: does ``text`` contain a match of ``pattern``?"""
    return compile_go(pattern).search(text) is not None
