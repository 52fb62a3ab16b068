"""Header fields the modern way, at a bounded cost: the budget, shared objects, plain From."""

import re
from email.headerregistry import BaseHeader, HeaderRegistry

__all__ = ["MAX_PARSED_FIELD", "HeaderFactory", "plain_mailbox"]

# The modern header parser costs microseconds per character, is superlinear on some input and
# overflows the stack on deeply nested comments: it reads a prefix of each field, and a
# message's fields up to a budget, after which fields are read as empty.
MAX_PARSED_FIELD = 8_192


class _Registry(HeaderRegistry):
    """The stdlib's header registry, which builds a new class for every header it parses:
    the class made for a field name is kept (for a bounded number of names)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._classes.get(key)
        if made is None:
            made = super().__getitem__(name)
            if len(self._classes) < 256:
                self._classes[key] = made
        return made


_REGISTRY = _Registry()
# Fields of MIME structure repeat a few values (`text/plain; charset="utf-8"`, `base64`) from
# message to message: their header objects, which nothing changes, are shared between messages.
_SHARED_FIELDS = frozenset(
    {"content-type", "content-transfer-encoding", "content-disposition", "mime-version"}
)
_SHARED_MAX_VALUE = 256
_SHARED_MAX = 4_096
_shared_headers: dict[tuple[str, str], BaseHeader] = {}
# A From field of one plain mailbox (atoms, then an address in angle brackets, or the bare
# address, no encoded word) reads the same without the modern parser, which spends ~100 µs on it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_MAILBOX = re.compile(
    rf"[ \t]*(?:({_ATOM}(?:[ \t]+{_ATOM})*)[ \t]*)?<({_PLAIN_ADDRESS})>[ \t]*"
    rf"|[ \t]*({_PLAIN_ADDRESS})[ \t]*"
)
_BLANKS = re.compile(r"[ \t]+")


class HeaderFactory:
    """Builds the modern policy's header objects within one message's parsing budget."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._built: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> BaseHeader:
        key = (name, value[:MAX_PARSED_FIELD])
        if key not in self._built:  # the stdlib parses a part's Content-Type again and again
            self._built[key] = self._build(*key)
        return self._built[key]

    def _build(self, name: str, value: str) -> BaseHeader:
        if len(value) > self._budget:
            value = ""
        self._budget -= len(value)
        shared = len(value) <= _SHARED_MAX_VALUE and name.lower() in _SHARED_FIELDS
        header = _shared_headers.get((name, value)) if shared else None
        if header is None:
            header = _parse_field(name, value)
            if shared:
                if len(_shared_headers) >= _SHARED_MAX:
                    _shared_headers.clear()
                _shared_headers[(name, value)] = header
        return header


def _parse_field(name: str, value: str) -> BaseHeader:
    try:
        return _REGISTRY(name, value)
    except Exception:  # RecursionError on deeply nested comments, or a parser bug
        return _REGISTRY(name, "")


def plain_mailbox(value: str) -> tuple[str, str] | None:
    """(display name, address) of a From value that is one plain mailbox, else None."""
    found = _PLAIN_MAILBOX.fullmatch(value) if "=?" not in value else None  # no encoded words
    if found is None:
        return None
    return _BLANKS.sub(" ", found.group(1) or ""), found.group(2) or found.group(3)
