from pathlib import Path

import pytest

from mirror.errors import ConfigError
from mirror.model import Scope, ScopeKind
from mirror.settings import DEFAULT_UPSTREAM_URL, Secret, Settings


def test_defaults_need_nothing_configured() -> None:
    s = Settings.load(env={})
    assert s.embedded_database
    assert s.upstream_url == DEFAULT_UPSTREAM_URL
    assert s.kafka_bootstrap is None
    assert s.kafka_topic_prefix == "registry-mirror"
    assert s.scopes == ()
    assert s.api_tokens == {}


def test_environment_is_read() -> None:
    s = Settings.load(
        env={
            "MIRROR_DATABASE_URL": "postgresql://u:pw@db:5432/mirror",
            "MIRROR_UPSTREAM_URL": "http://127.0.0.1:9090/",
            "MIRROR_SCOPES": "folder:b1g, registry:crpabc ,repository:crpabc/app/web,folder:b1g",
            "MIRROR_KAFKA_BOOTSTRAP": "127.0.0.1:9092, 127.0.0.1:9093",
            "MIRROR_API_TOKENS": "tok1:read,tok2:admin",
        }
    )
    assert s.database_url == Secret("postgresql://u:pw@db:5432/mirror")
    assert s.upstream_url == "http://127.0.0.1:9090"
    assert s.scopes == (
        Scope(ScopeKind.FOLDER, "b1g"),
        Scope(ScopeKind.REGISTRY, "crpabc"),
        Scope(ScopeKind.REPOSITORY, "crpabc/app/web"),
    )
    assert s.kafka_bootstrap == "127.0.0.1:9092,127.0.0.1:9093"
    assert s.api_tokens == {Secret("tok1"): "read", Secret("tok2"): "admin"}


def test_flags_win_over_environment() -> None:
    s = Settings.load(env={"MIRROR_UPSTREAM_URL": "http://a:1"}, upstream_url="http://b:2")
    assert s.upstream_url == "http://b:2"
    # a flag left unset does not erase the environment's value
    s = Settings.load(env={"MIRROR_UPSTREAM_URL": "http://a:1"}, upstream_url=None)
    assert s.upstream_url == "http://a:1"


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"scopes": "cluster:abc"}, "--scope (MIRROR_SCOPES)"),
        ({"upstream_url": "ftp://x"}, "--upstream-url (MIRROR_UPSTREAM_URL)"),
    ],
)
def test_a_bad_flag_is_named_as_typed(flags: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(env={}, **flags)
    assert str(caught.value).startswith((named + " ", named + ":"))


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MIRROR_DATABASE_URL": "mysql://x"}, "MIRROR_DATABASE_URL"),
        ({"MIRROR_UPSTREAM_URL": "ftp://x"}, "MIRROR_UPSTREAM_URL"),
        ({"MIRROR_OPERATION_URL": "not a url"}, "MIRROR_OPERATION_URL"),
        ({"MIRROR_SCOPES": "cluster:abc"}, "MIRROR_SCOPES"),
        ({"MIRROR_SCOPES": "folder"}, "MIRROR_SCOPES"),
        ({"MIRROR_SCOPES": "repository:Bad/Name"}, "MIRROR_SCOPES"),
        ({"MIRROR_KAFKA_BOOTSTRAP": "localhost"}, "MIRROR_KAFKA_BOOTSTRAP"),
        ({"MIRROR_KAFKA_TOPIC_PREFIX": "a b"}, "MIRROR_KAFKA_TOPIC_PREFIX"),
        ({"MIRROR_API_TOKENS": "s3cr3t-token:root"}, "MIRROR_API_TOKENS"),
        ({"MIRROR_API_TOKENS": "s3cr3t-token"}, "MIRROR_API_TOKENS"),
        ({"MIRROR_UPSTREAM_TOKEN_FILE": "/nonexistent/token"}, "MIRROR_UPSTREAM_TOKEN_FILE"),
        ({"MIRROR_UPSTREAM_SA_KEY_FILE": "/nonexistent/key.json"}, "MIRROR_UPSTREAM_SA_KEY_FILE"),
        ({"MIRROR_UPSTREAM_RPS": "-1"}, "MIRROR_UPSTREAM_RPS"),
        ({"MIRROR_UPSTREAM_CONCURRENCY": "many"}, "MIRROR_UPSTREAM_CONCURRENCY"),
        ({"MIRROR_LOG_LEVEL": "LOUD"}, "MIRROR_LOG_LEVEL"),
        ({"MIRROR_DELETE_GUARD": "1.5"}, "MIRROR_DELETE_GUARD"),
        ({"MIRROR_DELETE_GUARD": "half"}, "MIRROR_DELETE_GUARD"),
        ({"MIRROR_DELETE_CONFIRM_MAX": "0"}, "MIRROR_DELETE_CONFIRM_MAX"),
    ],
)
def test_bad_value_names_the_setting_in_one_line(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.load(env=env)
    message = str(err.value)
    assert names in message
    assert "\n" not in message


def test_secrets_never_appear_in_errors_or_repr(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.load(env={"MIRROR_API_TOKENS": "ok:read,hunter2:superuser"})
    assert "hunter2" not in str(err.value)
    s = Settings.load(
        env={
            "MIRROR_DATABASE_URL": "postgresql://u:pa55word@db/m",
            "MIRROR_UPSTREAM_TOKEN": "t0ps3cret",
            "MIRROR_API_TOKENS": "hunter2:admin",
        }
    )
    text = repr(s) + str(s)
    for secret in ("pa55word", "t0ps3cret", "hunter2"):
        assert secret not in text


def test_conflicting_credentials_are_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc")
    with pytest.raises(ConfigError, match="MIRROR_UPSTREAM_TOKEN"):
        Settings.load(
            env={"MIRROR_UPSTREAM_TOKEN": "x", "MIRROR_UPSTREAM_TOKEN_FILE": str(token_file)}
        )


def test_service_account_key_must_be_a_key(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"id": "k1"}')
    with pytest.raises(ConfigError, match="service_account_id"):
        Settings.load(env={"MIRROR_UPSTREAM_SA_KEY_FILE": str(key)})
    key.write_text('{"id": "k1", "service_account_id": "sa1", "private_key": "PEM"}')
    assert Settings.load(env={"MIRROR_UPSTREAM_SA_KEY_FILE": str(key)}).upstream_sa_key_file == key


def test_a_data_dir_flag_selects_the_embedded_server_over_the_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"MIRROR_DATABASE_URL": "postgresql://from-env/mirror"}
    settings = Settings.load(env=env, data_dir=str(tmp_path))
    assert settings.database_url is None and settings.embedded_database
    assert settings.data_dir == tmp_path
    # the environment alone, or both flags: the DSN stands
    assert Settings.load(env=env).database_url is not None
    both = Settings.load(env=env, data_dir=str(tmp_path), database_url="postgresql://flag/m")
    assert both.database_url is not None and both.database_url.reveal() == "postgresql://flag/m"


def test_grpc_port_and_tls(tmp_path: Path) -> None:
    assert Settings.load(env={}).grpc_port == 50051
    assert Settings.load(env={"MIRROR_GRPC_PORT": "off"}).grpc_port is None
    assert Settings.load(env={"MIRROR_GRPC_PORT": "0"}).grpc_port == 0
    assert Settings.load(env={"MIRROR_GRPC_PORT": "9000"}, grpc_port="OFF").grpc_port is None
    with pytest.raises(ConfigError, match=r"--grpc-port \(MIRROR_GRPC_PORT\) must be a port"):
        Settings.load(env={}, grpc_port="70000")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    loaded = Settings.load(env={"MIRROR_TLS_CERT": str(cert), "MIRROR_TLS_KEY": str(key)})
    assert loaded.tls_cert == cert and loaded.tls_key == key
    with pytest.raises(ConfigError, match="set both or neither"):
        Settings.load(env={"MIRROR_TLS_CERT": str(cert)})
    with pytest.raises(ConfigError, match="MIRROR_TLS_KEY"):
        Settings.load(env={"MIRROR_TLS_CERT": str(cert), "MIRROR_TLS_KEY": str(tmp_path / "no")})


def test_deletion_guard_settings() -> None:
    assert (Settings.load(env={}).delete_guard, Settings.load(env={}).delete_confirm_max) == (
        0.5,
        1000,
    )
    loaded = Settings.load(env={"MIRROR_DELETE_GUARD": "0.8", "MIRROR_DELETE_CONFIRM_MAX": "50"})
    assert (loaded.delete_guard, loaded.delete_confirm_max) == (0.8, 50)
    assert Settings.load(env={"MIRROR_DELETE_GUARD": "0.8"}, delete_guard="0").delete_guard == 0.0
