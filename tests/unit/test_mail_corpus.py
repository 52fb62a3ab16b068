"""shared.mail over a corpus of real-world and hand-broken messages that nobody here wrote.

The corpus is kept outside the repository (tests/corpus.py says where): missing, these tests
are skipped with the reason, and fail when `CI` is set.
"""

import os
from datetime import UTC
from pathlib import Path

import pytest

from shared.mail import MailParseError, ParsedMail, normalize_address, parse_mail
from tests.corpus import CORPUS, FILES, corpus_params, file_id, require_corpus


def test_corpus_is_present() -> None:
    require_corpus()


@pytest.mark.parametrize("path", corpus_params())
def test_corpus_message_parses_or_is_refused(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        parsed = parse_mail(path.read_bytes())
    except MailParseError:
        parsed = None
    assert capsys.readouterr() == ("", "")
    if parsed is None:
        return
    assert isinstance(parsed, ParsedMail)
    assert isinstance(parsed.subject, str)
    assert parsed.from_address is None or "@" in parsed.from_address
    assert (
        parsed.from_address is None or normalize_address(parsed.from_address) == parsed.from_address
    )
    assert parsed.date is None or parsed.date.tzinfo == UTC
    assert len(parsed.preview) <= 500
    for text in (parsed.subject, parsed.preview, parsed.from_name or "", parsed.message_id or ""):
        text.encode("utf-8")  # clean Unicode: no undecoded bytes left as lone surrogates


# What a few corpus messages must come out as: charsets, bounces, broken structure.
EXPECTED = {
    "mikel-mail/multi_charset/ks_c_5601-1987.eml": {"preview": "스티해"},
    "mikel-mail/multi_charset/japanese_shift_jis.eml": {
        "preview": "あいうえお このメールはテスト用のメールです。 "
        "今後ともよろしくお願い申し上げます\uff01"
    },
    "mikel-mail/multi_charset/japanese_iso_2022.eml": {"subject": "まみむめも"},
    "mikel-mail/plain_emails/raw_email_with_at_display_name.eml": {
        "from_addresses": ("test@lindsaar.net", "jack@lindsar.com")
    },
    "mikel-mail/rfc6532/utf8_headers.eml": {
        "from_address": "jdöe@xn--mchine-bua.example",
        "from_name": "Jöhn Doe",
    },
    "mikel-mail/error_emails/invalid_subject_characters.eml": {
        "from_name": "Formação Frenetikpolis",
        "subject": "Formação FrenetikPolis: Mega Campanha Final Verão | Cursos de Setembro",
    },
    "mikel-mail/multipart_report_emails/report_422.eml": {"is_auto_reply": True},
    "mikel-mail/multipart_report_emails/multipart_report_multiple_status.eml": {
        "auto_reply_reason": "multipart/report"
    },
    "mikel-mail/error_emails/bad_date_header.eml": {"date": None, "is_auto_reply": True},
    "mikel-mail/attachment_emails/attachment_with_base64_encoded_name.eml": {
        "attachment_names": ("This is a test.pdf",)
    },
    "mikel-mail/attachment_emails/attachment_nonascii_filename.eml": {
        "attachment_names": ("ciële.txt",)
    },
    "mikel-mail/attachment_emails/attachment_with_unquoted_name.eml": {
        "attachment_names": ("This is a test.txt",)
    },
    "mikel-mail/mime_emails/raw_email_with_binary_encoded.eml": {
        "attachment_names": ("2013-08-13_19-08-28-1.jpg",)
    },
    "mikel-mail/plain_emails/raw_email_bad_time.eml": {
        "preview": "Filter2: This message has been scanned for viruses and dangerous content by "
        "MailScanner, and is believed to be clean."
    },
}


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_known_corpus_message(name: str, expected: dict[str, object]) -> None:
    require_corpus()
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this corpus")
    parsed = parse_mail(path.read_bytes())
    names = tuple(a.filename for a in parsed.attachments)
    actual = {key: names if key == "attachment_names" else getattr(parsed, key) for key in expected}
    assert actual == expected


def test_only_the_empty_file_is_refused() -> None:
    require_corpus()
    refused = []
    for path in FILES:
        try:
            parse_mail(path.read_bytes())
        except MailParseError:
            refused.append(file_id(path))
    assert all(os.path.getsize(CORPUS / name) == 0 for name in refused)
