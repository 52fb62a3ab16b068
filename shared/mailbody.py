"""The whole body of a mail: its text (or a text rendering of its HTML) and its HTML, decoded."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from shared.mailparts import Attachment, BodyParts, part_attachment

__all__ = ["EMPTY_BODY", "MailBody", "html_to_lines", "read_mail_body"]

_VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]")
# Tags become marks (no whitespace, which is collapsed after them): a run of block marks is
# one line break, a blank line if a paragraph's is among them; <br> is a line break.
_LINE, _PARAGRAPH, _BR = "\x01", "\x02", "\x03"
_MARKS = str.maketrans("", "", _LINE + _PARAGRAPH + _BR)
_PARAGRAPH_RUN = re.compile("\x02[ \x01\x02]*")
_LINE_RUN = re.compile("\x01[ \x01]*")
_BLANK_LINES = re.compile("\n{3,}")
# A tag ends at the first ">" before any other "<" (so every character is read a bounded
# number of times, possessive quantifiers: no backtracking); a "<" that starts none is text.
_TAG = re.compile(r"<(?=[/!?a-zA-Z])(?:/?+([a-zA-Z][a-zA-Z0-9]*+)[^<>]*+>|[!?/][^<>]*+>)")
_GAP_OF = {
    **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table"), _PARAGRAPH),
    **dict.fromkeys(("div", "li", "tr", "ul", "ol", "dl", "dt", "dd", "hr", "pre"), _LINE),
    **dict.fromkeys(("section", "article", "header", "footer", "address", "center"), _LINE),
    **dict.fromkeys(("form", "fieldset", "caption", "figure"), _LINE),
    "td": " ",
    "th": " ",
    "br": _BR,
}
_HIDDEN_START = re.compile(r"<!--|<(script|style|title)(?![a-zA-Z0-9])", re.IGNORECASE)
_HIDDEN_END = {
    name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in ("script", "style", "title")
}


@dataclass(frozen=True, slots=True)
class MailBody:
    """A mail's body, whole: `text` is its text part, or (`text_from_html`) a rendering of
    its HTML; `html` its HTML part as sent, decoded; `other_parts` the text and HTML parts
    that are neither (a second text part, say). Line ends are \\n."""

    text: str = ""
    html: str | None = None
    text_from_html: bool = False
    other_parts: tuple[Attachment, ...] = ()


EMPTY_BODY = MailBody()


def read_mail_body(parts: BodyParts) -> MailBody:
    """The text part the preview was read from, and the first HTML part with visible text;
    where there is no such text part, the text is rendered from the HTML.

    Each part is decoded once, whole. Text and HTML parts that are neither, and have
    visible text, are kept as parts.
    """
    html_part = next((p for p in parts.html_parts if _VISIBLE.search(parts.decoded(p))), None)
    markup = None if html_part is None else _clean(parts.decoded(html_part))
    others = tuple(
        part_attachment(part)
        for part in (*parts.plain_parts, *parts.html_parts)
        if part is not parts.text_part
        and part is not html_part
        and _VISIBLE.search(parts.decoded(part))
    )
    if parts.text_part is None and markup is not None:
        return MailBody(html_to_lines(markup), markup, True, others)
    return MailBody(_clean(parts.text), markup, False, others)


def _clean(text: str) -> str:
    """Storable text: no NULs, line ends as \n (lone surrogates are gone already)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            text = text.replace("\r", "\n")
    return text


def html_to_lines(markup: str) -> str:
    """The visible text of an HTML document with its line breaks, entities unescaped.

    Linear in the markup (HTMLParser is quadratic on unclosed comments and tags): comments
    and the content of script, style and title elements are left out, whitespace runs become
    one space, <br> a line break, the tags of blocks one break where they meet (a blank line
    around paragraphs), cells a space, other tags nothing.
    """
    text = _without_hidden(markup)
    if any(mark in text for mark in (_LINE, _PARAGRAPH, _BR)):
        text = text.translate(_MARKS)
    text = " ".join(_TAG.sub(_gap, text).split())
    text = _LINE_RUN.sub("\n", _PARAGRAPH_RUN.sub("\n\n", text)).replace(_BR, "\n")
    text = text.replace(" \n", "\n").replace("\n ", "\n")
    return html.unescape(_BLANK_LINES.sub("\n\n", text)).strip()


def _without_hidden(markup: str) -> str:
    """The markup less its comments and hidden elements (an unclosed one runs to the end)."""
    if "<!--" not in markup and not _HIDDEN_START.search(markup):
        return markup
    kept: list[str] = []
    pos = 0
    while (found := _HIDDEN_START.search(markup, pos)) is not None:
        kept.append(markup[pos : found.start()])
        name = found.group(1)
        if name is None:
            end = markup.find("-->", found.end())
            pos = end + 3 if end >= 0 else len(markup)
        else:
            close = _HIDDEN_END[name.lower()].search(markup, found.end())
            pos = close.end() if close else len(markup)
    kept.append(markup[pos:])
    return "".join(kept)


def _gap(tag: re.Match[str]) -> str:
    name = tag.group(1)
    if name is None:
        return ""
    gap = _GAP_OF.get(name)
    return gap if gap is not None else _GAP_OF.get(name.lower(), "")
