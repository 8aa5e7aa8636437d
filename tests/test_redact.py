"""tracewatch.redact: the one helper that keeps credentials in URLs out of print."""

from __future__ import annotations

import logging

import pytest

from tracewatch.redact import install_log_redaction, redact_text, redact_url

SECRET = "s3cr:et;pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:9093", "http://127.0.0.1:9093"),
        (f"http://tracewatch:{SECRET}@am.internal:9093", "http://tracewatch:***@am.internal:9093"),
        ("https://TOKEN123@host/path", "https://***@host/path"),
        (f"https://u:{SECRET}@ch:8443/db?secure=1", "https://u:***@ch:8443/db?secure=1"),
        (f"https://h/x?password={SECRET}&db=a", "https://h/x?password=***&db=a"),
        (f"https://h/x?db=a&API_KEY={SECRET}", "https://h/x?db=a&API_KEY=***"),
        (f"ftp://u:{SECRET}@127.0.0.1:notaport", "ftp://u:***@127.0.0.1:notaport"),
        ("chdb:///var/lib/tracewatch/clickhouse", "chdb:///var/lib/tracewatch/clickhouse"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_every_url_in_a_message_is_redacted() -> None:
    message = (
        f"cannot reach http://a:{SECRET}@h1:1/x (then 'https://b:{SECRET}@h2') "
        "and mail me at ops@example.com"
    )
    assert redact_text(message) == (
        "cannot reach http://a:***@h1:1/x (then 'https://b:***@h2') and mail me at ops@example.com"
    )


def test_log_records_are_redacted_whatever_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    previous = logging.getLogRecordFactory()
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        log = logging.getLogger("tracewatch.test_redact")
        with caplog.at_level(logging.INFO):
            log.info("Alertmanager at %s failed", f"http://u:{SECRET}@am:9093")
            try:
                raise OSError(f"connect http://u:{SECRET}@ch:8123 refused")
            except OSError:
                log.exception("ClickHouse down")
        assert SECRET not in caplog.text
        assert "http://u:***@am:9093" in caplog.text and "http://u:***@ch:8123" in caplog.text
    finally:
        logging.setLogRecordFactory(previous)


def test_redacted_records_still_format_under_faust_s_formatter() -> None:
    """faust's log formatter (mode's ``ExtensionFormatter``) wraps a non-tuple ``args`` in
    a tuple: a record whose message was rendered here must carry ``()``, not ``None``,
    or every line the worker logs with arguments becomes a "Logging error"."""
    from mode.utils.logging import ExtensionFormatter

    previous = logging.getLogRecordFactory()
    try:
        install_log_redaction()
        record = logging.getLogRecordFactory()(
            "tracewatch.test", logging.INFO, __file__, 1, "consuming %s as %d%%", ("t", 5), None
        )
        text = ExtensionFormatter(fmt="%(message)s").format(record)
        assert text == "consuming t as 5%"
    finally:
        logging.setLogRecordFactory(previous)
