"""The body side of MIME parsing: charsets, the part walk, attachments and the text preview."""

import base64
import binascii
import codecs
import functools
import html
import io
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser

import pybase64

MAX_DEPTH = 50
MAX_PARTS = 10_000
_HTML_MAX_CHARS = 1_048_576  # markup scanned for a preview
_MAX_FILENAME = 255
_MAX_ID_CHARS = 998
_OCTET_STREAM = "application/octet-stream"
_MAX_DECODED_FIELD = 16_384  # header characters decoded as text; far more than is kept
_MAX_LEGACY_FIELD = 8_192  # compat32's parameter parser is quadratic in quoted semicolons
B64_BLOCK_CHARS = 4 * 1024 * 1024  # a longer base64 body is decoded this much at a time

# Names mail software writes that Python's codecs do not know, or know only as a narrower
# charset than the one senders really use. An empty value means "says nothing": guess instead.
_CHARSET_ALIASES = {
    **dict.fromkeys(("ksc56011987", "ksc5601", "euckr", "korean"), "cp949"),
    **dict.fromkeys(("unicode11utf7", "unicode20utf7", "xunicode20utf7"), "utf-7"),
    **dict.fromkeys(("gb2312", "gbk", "xgbk", "cp936"), "gb18030"),
    **dict.fromkeys(("shiftjis", "sjis", "xsjis", "windows31j"), "cp932"),
    **dict.fromkeys(("iso88591", "latin1"), "cp1252"),
    **dict.fromkeys(("windows874", "tis620"), "cp874"),
    "iso88598i": "iso8859-8",
    "iso88596i": "iso8859-6",
    "big5": "big5hkscs",
    "xmacroman": "mac-roman",
    **dict.fromkeys(("usascii", "ascii", "unknown8bit", "xunknown", "unknown", "default"), ""),
    "xuserdefined": "",
}
# Codecs Python has that are no charset; punycode also decodes in quadratic time.
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"})
_SURROGATES = re.compile("[\ud800-\udfff]")
_WORDS = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]+")
_VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]")  # a character of a word
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # all but \t \n \v \f \r
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_BREAK_TAGS = frozenset(
    {"br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "table", "hr", "blockquote", "pre"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "section"}
)
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)|<[!?/]")
_HIDDEN_END = {
    name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in ("script", "style", "title")
}


@dataclass(frozen=True, slots=True)
class Attachment:
    """One part that is not the body (a file, an inline image): its decoded name, declared
    type, decoded content, and how the body refers to it (`content_id`, without brackets)."""

    filename: str | None
    content_type: str
    size: int
    payload: bytes = field(repr=False)
    content_id: str | None = None
    disposition: str | None = None


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text in its declared charset, falling back until something fits; never raises."""
    return _SURROGATES.sub("\ufffd", _decoded(data, charset))


def _decoded(data: bytes, charset: str | None) -> str:
    """As decode_bytes, but lone surrogates (from a few codecs) are left for the caller."""
    for codec, errors in _decode_attempts(charset):
        try:
            return data.decode(codec, errors)
        except Exception:  # unknown or non-text codec, undecodable bytes, odd codec name
            continue
    return data.decode("latin-1")


def _decode_attempts(charset: str | None) -> list[tuple[str, str]]:
    declared = _codec_name(charset)
    attempts = [(declared, "strict")] if declared else []
    attempts.append(("utf-8", "strict"))
    if declared:
        attempts.append((declared, "replace"))
    attempts.append(("cp1252", "strict"))
    return list(dict.fromkeys(attempts))


@functools.lru_cache(maxsize=256)
def _codec_name(charset: str | None) -> str | None:
    """Python's codec for a declared charset, or None when it is unknown or says nothing."""
    if not charset:
        return None
    key = re.sub(r"[^a-z0-9]", "", charset.lower())
    name = _CHARSET_ALIASES.get(key, charset.strip().strip("\"'"))
    try:
        codec = codecs.lookup(name).name if name else None
    except Exception:  # LookupError, or a name no codec search accepts
        return None
    return None if codec in _NOT_CHARSETS else codec


def unescape_raw(raw: str) -> str:
    """Turn a raw header value holding undecoded 8-bit bytes back into text."""
    if not _SURROGATES.search(raw):
        return raw
    try:
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", raw)
    return decode_bytes(data, None)


def decode_header_text(raw: str) -> str:
    """Decode a raw header value: RFC 2047 encoded words and undeclared 8-bit bytes."""
    text = unescape_raw(raw[:_MAX_DECODED_FIELD])
    if "=?" not in text:
        return text
    try:
        chunks = decode_header(text)
    except Exception:  # broken base64 inside an encoded word, and the like
        return text
    return "".join(_decode_chunk(chunk, charset) for chunk, charset in chunks)


def _decode_chunk(chunk: bytes | str, charset: str | None) -> str:
    if isinstance(chunk, str):
        return chunk
    if charset is None:  # decode_header keeps plain runs as raw-unicode-escape bytes
        try:
            return chunk.decode("raw-unicode-escape")
        except UnicodeDecodeError:
            return chunk.decode("latin-1")
    return decode_bytes(chunk, charset)


def clean_text(text: str, limit: int) -> str:
    """Collapse whitespace and control characters to single spaces; keep `limit` characters.

    Reads a window of `text` that grows until its words fill the limit: a word the window
    cuts still gives its first characters, and those are all that is kept of it.
    """
    return _clean_start(text, limit)[0]


def _clean_start(text: str, limit: int) -> tuple[str, bool]:
    """clean_text, and whether the words of `text` filled the limit (more text changes
    nothing then)."""
    limit = max(limit, 0)
    window = limit + limit // 4 + 64
    while True:
        joined = " ".join(words(text[:window]))
        if len(joined) >= limit or window >= len(text):
            break
        window *= 4
    kept = joined[:limit]
    # Words are kept whole up to the limit: a separator at the cut is not kept.
    cleaned = _SURROGATES.sub("\ufffd", kept[:-1] if kept.endswith(" ") else kept)
    return cleaned, len(joined) >= limit


def words(text: str) -> list[str]:
    """The runs of `text` that are neither whitespace nor control characters.

    str.split splits at exactly the whitespace the pattern's \\s matches, four times as fast
    as the pattern: it is used when the only control characters are whitespace.
    """
    return _WORDS.findall(text) if _CONTROLS.search(text) else text.split()


def html_to_text(markup: str, limit: int) -> str:
    """Visible text of an HTML document, entities unescaped: one linear scan of its markup.

    Not HTMLParser: it is quadratic on unclosed comments and tags, hostile input.
    """
    markup = markup[:_HTML_MAX_CHARS]
    chunks: list[str] = []
    pos = length = 0
    while pos < len(markup) and length <= limit:
        tag = _TAG.search(markup, pos)
        start = tag.start() if tag else len(markup)
        chunks.append(markup[pos:start])
        length += sum(map(len, chunks[-1].split()))
        pos, gap = _after_tag(markup, tag) if tag else (start, "")
        chunks.append(gap)
    return clean_text(html.unescape("".join(chunks)), limit)


def _after_tag(markup: str, tag: re.Match[str]) -> tuple[int, str]:
    """Where text resumes after a tag, comment or hidden element, and the gap it leaves."""
    if tag.group() == "<!" and markup.startswith("<!--", tag.start()):
        end = markup.find("-->", tag.start() + 4)
        return (end + 3 if end >= 0 else len(markup)), ""
    end = markup.find(">", tag.start())
    if end < 0:
        return len(markup), ""
    name = (tag.group(2) or "").lower()
    if name in _HIDDEN_END and not tag.group(1):
        close = _HIDDEN_END[name].search(markup, end)
        return (close.end() if close else len(markup)), " "
    return end + 1, " " if name in _BREAK_TAGS else ""


def content_type(part: Message) -> str:
    """The part's media type, or application/octet-stream when it cannot be read."""
    try:
        value = part.get_content_type()
    except Exception:  # the header parser chokes on some hostile Content-Type values
        return _OCTET_STREAM
    return value if _CONTENT_TYPE.fullmatch(value) else _OCTET_STREAM


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # same as above, for Content-Disposition
        return None


def _filename(part: Message) -> str | None:
    if not _may_name_a_file(part):
        return None
    names = (_guarded_filename(part), _guarded_filename(_legacy_view(part)))
    decoded = [clean_text(decode_header_text(name), _MAX_FILENAME) for name in names if name]
    # A name without replacement characters wins, then the longer one: the lenient legacy
    # parse keeps unquoted names with spaces that the strict one cuts short.
    return max(filter(None, decoded), key=_name_rank, default=None)


def _may_name_a_file(part: Message) -> bool:
    """Whether a `name` or `filename` parameter (RFC 2231 sections too) may be present."""
    return any(
        "name" in str(value).lower()
        for field, value in part.raw_items()
        if field.lower() in ("content-type", "content-disposition")
    )


def _name_rank(name: str) -> tuple[bool, int]:
    return "\ufffd" not in name, len(name)


def _guarded_filename(part: Message) -> str | None:
    try:
        return part.get_filename()
    except Exception:  # malformed parameters or RFC 2231 sections
        return None


def _legacy_view(part: Message) -> Message:
    """The part's content headers as raw text, read the lenient compat32 way."""
    legacy = Message(policy=policy.compat32)
    for name, value in part.raw_items():
        if name.lower() in ("content-type", "content-disposition"):
            legacy[name] = str(value)[:_MAX_LEGACY_FIELD]
    return legacy


def _is_attachment(part: Message, ctype: str, filename: str | None) -> bool:
    if filename is not None or _disposition(part) == "attachment":
        return True
    return ctype.partition("/")[0] not in ("text", "multipart", "message")


def _children(part: Message, may_repair: bool) -> list[Message]:
    ctype = content_type(part)
    if not part.is_multipart():
        is_broken = ctype.startswith("multipart/") and may_repair
        return _repaired_children(part) if is_broken else []
    if ctype == "message/delivery-status" or _is_attachment(part, ctype, _filename(part)):
        return []
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)]


def _repaired_children(part: Message) -> list[Message]:
    """Parts of a multipart whose boundary parameter only the lenient legacy parse can read."""
    boundary = _legacy_view(part).get_boundary()
    body = part.get_payload()
    if not boundary or not isinstance(body, str) or f"--{boundary}" not in body:
        return []
    quoted = boundary.replace("\\", "\\\\").replace('"', '\\"')
    head = f'Content-Type: multipart/mixed; boundary="{quoted}"\n\n'
    try:
        repaired = BytesParser(policy=part.policy).parsebytes(
            (head + body).encode("ascii", "surrogateescape")
        )
    except Exception:  # an unencodable body or a parser failure: keep the part as text
        return []
    payload = repaired.get_payload() if repaired.is_multipart() else []
    return [child for child in payload if isinstance(child, Message)]


def walk_parts(msg: Message, defects: list[str]) -> Iterator[tuple[Message, bool]]:
    """Every part with whether it has sub-parts, depth first, without recursion.

    A repaired part's descendants are not repaired again, so no byte is re-parsed twice.
    """
    stack = [(msg, 0, True)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth, may_repair = stack.pop()
        seen += 1
        children = _children(part, may_repair)
        if children and depth >= MAX_DEPTH:
            defects.append("NestingTooDeepDefect")
            children = []
        repaired = bool(children) and not part.is_multipart()
        yield part, bool(children)
        stack.extend(
            (child, depth + 1, may_repair and not repaired) for child in reversed(children)
        )
    if stack:
        defects.append("TooManyPartsDefect")


@dataclass
class BodyParts:
    """A message's leaf parts sorted: attachments, text and HTML parts; its preview, defects,
    and the text part the preview was read from (`text_part`, its `text` decoded whole)."""

    attachments: list[Attachment] = field(default_factory=list)
    plain_parts: list[Message] = field(default_factory=list)
    html_parts: list[Message] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    preview: str = ""
    text_part: Message | None = None
    text: str = ""
    _decoded: dict[int, str] = field(default_factory=dict, repr=False)

    def decoded(self, part: Message) -> str:
        """One of the text or HTML parts decoded whole (no lone surrogates), once."""
        text = self._decoded.get(id(part))
        if text is None:
            text = self._decoded[id(part)] = _whole_text(part)[0]
        return text


def read_body(msg: Message, preview_chars: int) -> BodyParts:
    """The sorted parts, text preview and MIME defects of a parsed message."""
    body = BodyParts()
    for part, has_children in walk_parts(msg, body.defects):
        body.defects.extend(type(defect).__name__ for defect in part.defects)
        if not has_children:
            _sort_part(part, body)
    body.preview = _preview(body, preview_chars)
    return body


def _sort_part(part: Message, body: BodyParts) -> None:
    ctype = content_type(part)
    filename = _filename(part)
    if _is_attachment(part, ctype, filename):
        body.attachments.append(_attachment(part, ctype, filename))
    elif ctype == "text/html":
        body.html_parts.append(part)
    elif ctype == "text/plain" or (ctype.startswith("multipart/") and not part.is_multipart()):
        body.plain_parts.append(part)  # a multipart that could not be split keeps its body as text


def _attachment(part: Message, ctype: str, filename: str | None) -> Attachment:
    data = _payload_bytes(part)
    return Attachment(
        filename=filename,
        content_type=ctype,
        size=len(data),
        payload=data,
        content_id=_content_id(part),
        disposition=_disposition(part),
    )


def part_attachment(part: Message) -> Attachment:
    """A leaf part as an Attachment (a text part that is not the body, say)."""
    ctype = content_type(part)
    return _attachment(part, ctype, _filename(part))


def _content_id(part: Message) -> str | None:
    """The part's Content-ID without its angle brackets, as the body's `cid:` URLs name it."""
    raw = next((v for k, v in part.raw_items() if k.lower() == "content-id"), None)
    if raw is None:
        return None
    value = clean_text(unescape_raw(str(raw)[:_MAX_ID_CHARS]), _MAX_ID_CHARS)
    return value.strip().strip("<>").strip() or None


def _payload_bytes(part: Message) -> bytes:
    try:
        if part.is_multipart():
            return _serialized(part)
        data = _decoded_payload(part)
    except Exception:  # transfer encodings that do not decode
        return b""
    return data if isinstance(data, bytes) else b""


def _decoded_payload(part: Message) -> object:
    """part.get_payload(decode=True); a base64 body decoded by pybase64 where that agrees.

    get_payload joins the body's lines into a copy, checks it against the alphabet and
    decodes it with binascii: 460 us for a 100 KB attachment, pybase64 takes 60. Both skip
    line ends and other bytes outside the alphabet (get_payload by its fallback) and refuse
    bad padding; they differ only on data after a `=`, which binascii ignores: such a body,
    or one pybase64 refuses, is left to get_payload.
    """
    payload = vars(part).get("_payload")
    if (
        isinstance(payload, str)
        and payload.isascii()
        and str(part.get("content-transfer-encoding", "")).lower() == "base64"
    ):
        pad = payload.find("=")
        if pad == -1 or not payload[pad:].strip("=\r\n"):
            try:
                return b64_in_blocks(payload) or pybase64.b64decode(
                    payload.encode("ascii"), validate=False
                )
            except (binascii.Error, ValueError):
                pass
    return part.get_payload(decode=True)


def b64_in_blocks(text: str, block: int = B64_BLOCK_CHARS) -> bytes | None:
    """A base64 body of more than `block` characters decoded a block of lines at a time, so
    that only one block is encoded besides the body and its bytes; None (decode it whole)
    when it is shorter, or a block holds anything but whole quanta of the alphabet."""
    if len(text) <= block:
        return None
    out = io.BytesIO()
    start = 0
    while (stop := text.find("\n", start + block) + 1) > 0:
        letters = text[start:stop].encode("ascii").translate(None, b"\r\n")
        if len(letters) % 4:
            return None
        try:
            out.write(pybase64.b64decode(letters, validate=True))
        except (binascii.Error, ValueError):
            return None
        start = stop
    out.write(pybase64.b64decode(text[start:].encode("ascii"), validate=False))
    return out.getvalue()


def _serialized(part: Message) -> bytes:
    payload = part.get_payload()
    inner: object = part
    if (
        isinstance(payload, list)
        and len(payload) == 1
        and content_type(part).startswith("message/")
    ):
        inner = payload[0]  # an attached message: its own bytes, not the wrapper's
    return inner.as_bytes(policy=policy.compat32) if isinstance(inner, Message) else b""


def _whole_text(part: Message) -> tuple[str, bool]:
    """A text part's body decoded whole, with no lone surrogates; and whether it was read
    as `_plain_preview` reads its start: strictly in its charset (UTF-8 without one).

    Of Python's codecs only UTF-7 gives lone surrogates: only its text is searched for them.
    """
    try:
        data = _decoded_payload(part)
    except Exception:  # transfer encodings that do not decode
        return "", False
    if not isinstance(data, bytes):
        return "", False
    charset = _content_charset(part)
    declared = _codec_name(charset)
    try:
        text, as_declared = data.decode(declared or "utf-8"), True
    except Exception:  # what _decoded tries first: the same fallbacks follow
        text, as_declared = _decoded(data, charset), False
    if declared == "utf-7":
        text = _SURROGATES.sub("\ufffd", text)
    return text, as_declared


def _part_text(part: Message) -> str:
    try:
        data = _decoded_payload(part)
    except Exception:  # transfer encodings that do not decode
        return ""
    # Surrogates are left to clean_text, which reads the few characters the preview keeps.
    return _decoded(data, _content_charset(part)) if isinstance(data, bytes) else ""


_CHARSETS: dict[str, str | None] = {}


def _content_charset(part: Message) -> str | None:
    """The part's charset parameter (None when absent or unreadable).

    It depends on the Content-Type value alone, and mail repeats a few of them: each is read
    once.
    """
    key = str(part.get("content-type", ""))
    try:
        return _CHARSETS[key]
    except KeyError:
        pass
    try:
        charset = part.get_content_charset()
    except Exception:  # unreadable charset parameter: guess
        charset = None
    if len(_CHARSETS) < 1024:
        _CHARSETS[key] = charset
    return charset


_PREVIEW_WINDOW = 4096  # characters of a body first decoded for its preview; grows by 4
_UUENCODED = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})


def _plain_preview(part: Message, limit: int) -> str:
    """clean_text of a text part's decoded body, decoding only the start of it that the
    preview needs (a 20 KB body was decoded whole for 500 characters).

    The start is cut at a line end, where quoted-printable and base64 lines decode on their
    own, and decoded in the declared charset (UTF-8 without one) with an incremental decoder,
    which holds back a character the cut splits. Anything else (no line end, base64 that is
    not clean, a body not valid in its charset at the start, uuencode) is decoded whole, as
    before. A charset error further on does not change how the start reads.
    """
    payload = vars(part).get("_payload")  # the raw text, which get_payload() would decode
    cte = str(part.get("content-transfer-encoding", "")).lower()
    codec = _codec_name(_content_charset(part)) or "utf-8"
    window = _PREVIEW_WINDOW
    while isinstance(payload, str) and cte not in _UUENCODED and window < len(payload):
        cut = payload.rfind("\n", 0, window) + 1
        start = _decoded_start(payload[:cut], cte, codec) if cut else None
        if start is None:
            break
        text, full = _clean_start(start, limit)
        if full:
            return text
        window *= 4
    return clean_text(_part_text(part), limit)


def _decoded_start(chunk: str, cte: str, codec: str) -> str | None:
    """The text of a body's first lines, or None if they do not decode cleanly."""
    try:
        data = chunk.encode("ascii", "surrogateescape")  # as get_payload encodes the body
        if cte == "quoted-printable":
            data = quopri.decodestring(data)
        elif cte == "base64":
            data = b"".join(data.splitlines())
            if len(data) % 4:
                return None
            data = base64.b64decode(data, validate=True)
        return codecs.getincrementaldecoder(codec)("strict").decode(data, final=False)
    except Exception:  # binascii.Error, UnicodeError, a codec without incremental decoding
        return None


def _preview(body: BodyParts, limit: int) -> str:
    """The preview of the first text part with visible text (kept as the body's text), else
    of the first HTML part with some.

    The text part is decoded whole once: its preview is cleaned from that where it reads as
    `_plain_preview` reads the start (tested against it), else read by `_plain_preview`.
    """
    for part in body.plain_parts:
        text, as_declared = _whole_text(part)
        if _VISIBLE.search(text):
            body.text_part, body.text = part, text
            body._decoded[id(part)] = text
            return clean_text(text, limit) if as_declared else _plain_preview(part, limit)
    for part in body.html_parts:
        text = html_to_text(body.decoded(part), limit)
        if text:
            return text
    return ""
