"""A mail's HTML made safe to show in the CRM's pages: nh3 (ammonia) with a strict policy."""

from __future__ import annotations

import html
import re

import nh3

from shared.mailbody import html_to_lines

__all__ = ["MAX_NESTING_COST", "safe_html"]

# What stays: ammonia's default tags and attributes (no script, no forms, no event handlers,
# no iframes), a few presentational ones mail uses, and inline styles limited to properties
# that load nothing. Images keep only `cid:` sources (the mail's own inline parts): a remote
# image would tell the sender the mail was read. Links stay (rel="noopener noreferrer").
_TAGS = nh3.ALLOWED_TAGS | {"font"}
_EXTRA_ATTRIBUTES = {
    "*": {"style", "dir", "lang", "title", "align"},
    "font": {"color", "face", "size"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"width", "height", "valign", "bgcolor", "nowrap"},
    "th": {"width", "height", "valign", "bgcolor", "nowrap"},
    "tr": {"valign", "bgcolor"},
}
_ATTRIBUTES = {
    tag: set(nh3.ALLOWED_ATTRIBUTES.get(tag, set())) | _EXTRA_ATTRIBUTES.get(tag, set())
    for tag in set(nh3.ALLOWED_ATTRIBUTES) | set(_EXTRA_ATTRIBUTES)
}
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid"}
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "text-indent", "text-transform",
    "line-height", "letter-spacing", "white-space", "vertical-align", "direction",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left",
    "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "border-radius", "width", "height", "max-width", "min-width",
}  # fmt: skip
_CLEAN_CONTENT = {"script", "style", "title"}
# No property above takes a URL; a value that names one anyway (or hides one in an escape)
# loses its whole style attribute.
_LOADS_SOMETHING = re.compile(r"url\s*\(|image-set|expression|@import|\\", re.IGNORECASE)

# ammonia's HTML parser checks the stack of open elements for each block tag, and the list of
# open formatting elements (b, font, ...) for each new one: nesting costs the square of its
# depth (100,000 nested <div> take a minute, 20,000 <b id=N> 14 s). An estimate of that work
# (the open elements at each tag, a formatting one counting ten) above this budget (about
# 0.1 s) renders the text instead.
MAX_NESTING_COST = 12_500_000
_FORMATTING_WEIGHT = 10
_TAG_NAMES = re.compile(r"<(/?)([a-z][a-z0-9]*+)")  # of the lower-cased markup
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
    | {"track", "wbr", "param", "keygen", "frame", "basefont", "bgsound", "image", "isindex"}
)
# A start tag of these closes the open one of its name (nearly always): no deeper.
_SELF_CLOSING = frozenset(
    {"p", "li", "dd", "dt", "option", "optgroup", "tr", "td", "th", "rb", "rt", "rtc", "rp"}
    | {"tbody", "thead", "tfoot", "colgroup", "caption", "html", "head", "body", "a", "nobr"}
)
_FORMATTING = frozenset(
    {"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong"}
    | {"tt", "u"}
)
_WEIGHTS = dict.fromkeys(_FORMATTING, 1 + _FORMATTING_WEIGHT)


def safe_html(markup: str) -> str:
    """`markup` sanitised for display: no active content, nothing loaded from elsewhere.

    Markup nested too deeply to sanitise in bounded time becomes its text, escaped, in a
    <pre> element.
    """
    if _nesting_cost(markup) > MAX_NESTING_COST:
        return _as_text(markup)
    return nh3.clean(
        markup,
        tags=_TAGS,
        clean_content_tags=_CLEAN_CONTENT,
        attributes=_ATTRIBUTES,
        attribute_filter=_attribute_filter,
        url_schemes=_URL_SCHEMES,
        filter_style_properties=_STYLE_PROPERTIES,
        strip_comments=True,
        link_rel="noopener noreferrer",
    )


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute == "src":
        return value if value[:4].lower() == "cid:" else None
    if attribute == "style" and _LOADS_SOMETHING.search(value):
        return None
    return value


def _as_text(markup: str) -> str:
    return f"<pre>{html.escape(html_to_lines(markup), quote=False)}</pre>"


def _nesting_cost(markup: str) -> int:
    """An upper estimate of the parser's work on nesting: the open elements at each tag.

    With n tags it is at most 11 n^2, so only markup with more tags than that allows is
    counted. An end tag closes one open element of its name, if there is one.
    """
    tags = _TAG_NAMES.findall(markup.lower())
    if (1 + _FORMATTING_WEIGHT) * len(tags) ** 2 <= MAX_NESTING_COST:
        return 0
    open_names = dict.fromkeys(_SELF_CLOSING, 0)
    depth = cost = 0
    for closing, name in tags:
        opened = open_names.get(name, 0)
        if closing:
            if opened:
                open_names[name] = opened - 1
                depth -= _WEIGHTS.get(name, 1)
        elif not (opened and name in _SELF_CLOSING) and name not in _VOID:
            open_names[name] = opened + 1
            depth += _WEIGHTS.get(name, 1)
        cost += depth
    return cost
