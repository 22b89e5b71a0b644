"""The demo's settings: what it takes from the environment, and what it leaves alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.errors import ConfigError
from mirror.runner.demo import IGNORED_ENV, default_demo_data_dir, demo_settings
from mirror.settings import default_data_dir


def test_the_demo_ignores_real_data_upstream_and_credentials() -> None:
    env = {
        "MIRROR_DATABASE_URL": "postgresql://prod.example/mirror",
        "MIRROR_DATA_DIR": "/var/lib/mirror",
        "MIRROR_UPSTREAM_URL": "https://registry.example",
        "MIRROR_UPSTREAM_TOKEN": "secret",
        "MIRROR_SCOPES": "folder:b1g",
        "MIRROR_API_TOKENS": "t:read",
        "MIRROR_KAFKA_BOOTSTRAP": "kafka:9092",
        "MIRROR_LOG_LEVEL": "warning",
    }
    assert set(env) - {"MIRROR_KAFKA_BOOTSTRAP", "MIRROR_LOG_LEVEL"} <= IGNORED_ENV
    settings = demo_settings(env)
    assert settings.database_url is None  # the embedded PostgreSQL
    assert settings.data_dir == default_demo_data_dir() != default_data_dir()
    assert settings.upstream_token is None and not settings.scopes and not settings.api_tokens
    assert settings.kafka_bootstrap == "kafka:9092"  # honoured: events also go to Kafka
    assert settings.log_level == "WARNING"


def test_demo_flags_win(tmp_path: Path) -> None:
    settings = demo_settings(
        {}, data_dir=tmp_path, database_url="postgresql://localhost/demo", log_level="debug"
    )
    assert settings.data_dir == tmp_path
    assert settings.database_url is not None
    assert settings.database_url.reveal() == "postgresql://localhost/demo"
    assert settings.log_level == "DEBUG"


def test_a_bad_kafka_setting_still_fails_the_demo() -> None:
    with pytest.raises(ConfigError, match="MIRROR_KAFKA_BOOTSTRAP"):
        demo_settings({"MIRROR_KAFKA_BOOTSTRAP": "not a host"})


def test_the_demo_is_quiet_unless_asked() -> None:
    assert demo_settings({}).log_level == "WARNING"
    assert demo_settings({"MIRROR_LOG_LEVEL": "info"}).log_level == "INFO"
    assert demo_settings({}, log_level="debug").log_level == "DEBUG"
