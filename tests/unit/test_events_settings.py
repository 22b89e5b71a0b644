"""The relay's settings: partitions, replication, retention (mirror/settings.py)."""

from datetime import timedelta

import pytest

from mirror.errors import ConfigError
from mirror.events.producer import topic_specs
from mirror.settings import Settings


def test_relay_defaults() -> None:
    s = Settings.load(env={})
    assert (s.kafka_partitions, s.kafka_replication) == (3, 1)
    assert s.events_retention == timedelta(days=7)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1.5d", timedelta(hours=36)),
    ],
)
def test_retention_durations(raw: str, expected: timedelta) -> None:
    assert Settings.load(env={"MIRROR_EVENTS_RETENTION": raw}).events_retention == expected


@pytest.mark.parametrize("raw", ["0d", "7x", "-1d", "d", "seven days"])
def test_bad_retention_names_the_setting(raw: str) -> None:
    with pytest.raises(ConfigError, match="MIRROR_EVENTS_RETENTION"):
        Settings.load(env={"MIRROR_EVENTS_RETENTION": raw})


@pytest.mark.parametrize("raw", ["7", "3600", "1.5"])
def test_a_bare_number_is_refused_not_taken_as_seconds(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"MIRROR_EVENTS_RETENTION needs a unit"):
        Settings.load(env={"MIRROR_EVENTS_RETENTION": raw})


@pytest.mark.parametrize("name", ["MIRROR_KAFKA_PARTITIONS", "MIRROR_KAFKA_REPLICATION"])
@pytest.mark.parametrize("raw", ["0", "-2", "three"])
def test_bad_topic_sizes_name_the_setting(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.load(env={name: raw})


def test_topic_specs_follow_the_settings() -> None:
    s = Settings.load(
        env={
            "MIRROR_KAFKA_TOPIC_PREFIX": "acme.mirror",
            "MIRROR_KAFKA_PARTITIONS": "12",
            "MIRROR_KAFKA_REPLICATION": "3",
        }
    )
    specs = {spec.name: spec for spec in topic_specs(s)}
    assert set(specs) == {"acme.mirror.images", "acme.mirror.blobs", "acme.mirror.tags"}
    assert all(x.partitions == 12 and x.replication == 3 for x in specs.values())
    assert specs["acme.mirror.images"].configs == {"min.insync.replicas": "2"}
    single = topic_specs(Settings.load(env={}))
    assert all(x.configs == {} for x in single)
