from pathlib import Path

import pytest

from connector.config import ConfigError, load_settings

GOOD = """
[database]
url = "sqlite:///x.db"

[[connections]]
id = "acme"
provider = "xero"
base_url = "http://127.0.0.1:1/xero"
token_url = "http://127.0.0.1:1/xero/connect/token"
client_id = "cid"
client_secret = "${TEST_SECRET}"
refresh_token = "${TEST_RT:-rt-default-value}"
tenant_id = "t-1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_good_file_with_env_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SECRET", "s3cret-value")
    settings = load_settings(write(tmp_path, GOOD))
    conn = settings.connection("acme")
    assert conn.client_secret.get_secret_value() == "s3cret-value"
    assert conn.refresh_token.get_secret_value() == "rt-default-value"
    assert conn.tenant == "t-1"
    assert "s3cret-value" not in repr(settings)


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XERO_CLIENT_ID", "XERO_CLIENT_SECRET", "XERO_REFRESH_TOKEN", "XERO_TENANT_ID"):
        monkeypatch.setenv(name, f"value-of-{name}")
    settings = load_settings(Path(__file__).parents[2] / "config.example.toml")
    assert settings.connections[0].id == "acme-xero"


@pytest.mark.parametrize(
    ("mutate", "key", "fix"),
    [
        (
            lambda t: t.replace(
                'client_secret = "${TEST_SECRET}"', 'client_secret = "${NOT_SET_ANYWHERE}"'
            ),
            "connections[0].client_secret",
            "export NOT_SET_ANYWHERE",
        ),
        (
            lambda t: t.replace('provider = "xero"', 'provider = "zero"'),
            "connections[0] (id='acme').provider",
            "use one of",
        ),
        (
            lambda t: t.replace('tenant_id = "t-1"\n', ""),
            "connections[0] (id='acme').tenant_id",
            'add tenant_id = "…"',
        ),
        (
            lambda t: t.replace("client_id", "clientid"),
            "connections[0] (id='acme').clientid",
            "did you mean",
        ),
        (lambda t: t.replace("[database]", "[databse]"), "databse", "did you mean 'database'"),
        (lambda t: t + "\n[[connections]]\nid = 'acme'\n", "connections[1]", ""),
        (
            lambda t: t.replace('id = "acme"', 'id = "a b"'),
            "connections[0] (id='a b').id",
            "correct the value",
        ),
        (lambda t: t.replace("[[connections]]", "[[connections]"), "-", "fix the syntax"),
    ],
)
def test_bad_config_names_file_key_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutate: object, key: str, fix: str
) -> None:
    monkeypatch.setenv("TEST_SECRET", "s3cret-value")
    path = write(tmp_path, mutate(GOOD))  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.file == str(path)
    assert info.value.key.startswith(key)
    assert fix in info.value.fix
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")


def test_unknown_connection_lists_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SECRET", "s3cret-value")
    settings = load_settings(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="use one of: acme"):
        settings.connection("other")
