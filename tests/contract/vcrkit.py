"""The strict vcrpy kit every provider's contract tests share.

Cassettes are replayed, never written (``record_mode="none"``); a request matches
only on everything that makes it what it is (method, URL parts, the body parsed
*and* byte for byte, and the provider's contract headers); no interaction is
played twice, so a duplicate send fails the test. Secrets are scrubbed from
form bodies and token responses before anything is recorded.

vcrpy's ``filter_post_data_parameters`` is deliberately not used: for a JSON
request it re-serializes the body through floats, which would hide exactly the
byte-level differences (``1.00`` vs ``1.0``) the write tests exist to catch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import vcr
from vcr.request import Request as VcrRequest

# Keys of a token response whose values are replaced before recording.
SECRET_JSON_FIELDS = ("access_token", "refresh_token", "id_token")
MATCH_ON = (
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "query",
    "body",
    "raw_body",
    "contract_headers",
)


def request_scrubber(secret_form_fields: Iterable[str]) -> Callable[[VcrRequest], VcrRequest]:
    """A ``before_record_request`` that drops these fields from form bodies."""
    secret = frozenset(secret_form_fields)

    def scrub_request(request: VcrRequest) -> VcrRequest:
        content_type = str(request.headers.get("Content-Type", ""))
        body = request.body
        if body and "application/x-www-form-urlencoded" in content_type.lower():
            text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
            kept = [(k, v) for k, v in parse_qsl(text, keep_blank_values=True) if k not in secret]
            request.body = urlencode(kept)
        return request

    return scrub_request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """Replace token values of a token response by ``scrubbed-…`` placeholders.

    Placeholders already in a loaded cassette are left as they are (vcrpy runs
    this on cassettes it loads as well as on recordings).
    """
    response = copy.deepcopy(response)
    raw = response.get("body", {}).get("string")
    if not raw:
        return response
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return response
    if not isinstance(data, dict):
        return response
    secret_keys = [
        k for k in SECRET_JSON_FIELDS if k in data and not str(data[k]).startswith("scrubbed-")
    ]
    if secret_keys:
        for key in secret_keys:
            data[key] = f"scrubbed-{key.replace('_', '-')}"
        text = json.dumps(data)
        response["body"]["string"] = text.encode() if isinstance(raw, bytes) else text
        for name in list(response.get("headers", {})):
            if name.lower() == "content-length":
                response["headers"][name] = [str(len(text.encode()))]
    return response


def header_matcher(names: Iterable[str]) -> Callable[[VcrRequest, VcrRequest], None]:
    """A matcher: these headers of the live request equal the recorded ones (or are absent)."""
    wanted = tuple(names)

    def contract_headers(live: VcrRequest, recorded: VcrRequest) -> None:
        problems = []
        for name in wanted:
            got, want = live.headers.get(name), recorded.headers.get(name)
            if got != want:
                problems.append(f"{name}: sent {got!r}, cassette has {want!r}")
        if problems:
            raise AssertionError("; ".join(problems))

    return contract_headers


class ContractVCR:
    """``vcr.VCR`` whose cassettes never play an interaction twice.

    ``allow_playback_repeats`` is a per-cassette option in vcrpy, so it is set on
    every ``use_cassette`` here rather than on the ``VCR`` object.
    """

    def __init__(self, config: vcr.VCR) -> None:
        self.config = config

    def use_cassette(self, name: str, **options: Any) -> Any:
        """``vcr.use_cassette`` with ``allow_playback_repeats=False``."""
        return self.config.use_cassette(name, allow_playback_repeats=False, **options)


def make_contract_vcr(
    cassette_dir: Path,
    *,
    contract_headers: Iterable[str],
    secret_form_fields: Iterable[str],
    record_mode: str = "none",
) -> ContractVCR:
    """The strict vcrpy configuration of one provider's contract tests."""
    config = vcr.VCR(
        cassette_library_dir=str(cassette_dir),
        serializer="yaml",
        record_mode=record_mode,
        match_on=MATCH_ON,
        filter_headers=["authorization"],
        before_record_request=request_scrubber(secret_form_fields),
        before_record_response=scrub_response,
        decode_compressed_response=True,
    )
    config.register_matcher("contract_headers", header_matcher(contract_headers))
    return ContractVCR(config)


def stale_cassettes(built: Mapping[str, str], cassette_dir: Path) -> list[str]:
    """Names of the generated cassettes whose committed file differs (or is missing)."""
    stale = []
    for name, text in built.items():
        path = cassette_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def generator_main(built: Mapping[str, str], cassette_dir: Path, argv: list[str]) -> int:
    """A cassette generator's command line: write the stale ones (``--check``: only report)."""
    check = "--check" in argv
    stale = stale_cassettes(built, cassette_dir)
    if not check:
        cassette_dir.mkdir(parents=True, exist_ok=True)
        for name in stale:
            (cassette_dir / name).write_text(built[name], encoding="utf-8")
    verb = "stale" if check else "written"
    print(f"{len(stale)} cassette(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if check and stale else 0
