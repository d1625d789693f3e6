import io
import json
import logging

from connector.logging import REDACTED, configure_logging, get_logger, register_secret


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_off_a_tty_and_secrets_masked_everywhere() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "auto", stream=stream)  # StringIO is not a TTY → JSON
    register_secret("rt-very-secret-refresh")
    log = get_logger("test")
    log.info(
        "token_refreshed",
        refresh_token="rt-very-secret-refresh",
        client_secret="cs-12345678",
        headers={"Authorization": "Bearer abc.def.ghi", "Accept": "json"},
        note="sent rt-very-secret-refresh to the server",
    )
    logging.getLogger("httpx").warning(
        "HTTP Request with Authorization: Bearer zzz.yyy and rt-very-secret-refresh"
    )
    text = stream.getvalue()
    assert "rt-very-secret-refresh" not in text
    assert "cs-12345678" not in text
    assert "abc.def.ghi" not in text
    assert "zzz.yyy" not in text
    records = lines(stream)
    assert records[0]["event"] == "token_refreshed"
    assert records[0]["refresh_token"] == REDACTED
    assert records[0]["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert records[0]["note"] == f"sent {REDACTED} to the server"
    assert records[1]["level"] == "warning"


def test_console_format_when_asked() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "console", stream=stream)
    get_logger("test").info("hello", access_token="at-secret-xyz")
    text = stream.getvalue()
    assert "hello" in text
    assert "at-secret-xyz" not in text
    assert not text.lstrip().startswith("{")
