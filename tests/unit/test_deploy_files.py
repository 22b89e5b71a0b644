"""docker-compose.yml and the Dockerfile speak the Settings' language."""

import re
from pathlib import Path

import yaml

from mirror.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_mirror_variables_are_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "kafka", "mirror"} <= set(compose["services"])
    env = compose["services"]["mirror"]["environment"]
    names = set(env)
    assert names, "the mirror service sets no environment"
    unknown = {n for n in names if n.startswith("MIRROR_")} - Settings.env_names()
    assert not unknown, f"docker-compose.yml sets variables the Settings do not know: {unknown}"
    assert compose["services"]["postgres"]["image"].startswith("postgres:18")
    for service in compose["services"].values():
        assert "healthcheck" in service


def test_dockerfile_variables_are_settings_or_runtime() -> None:
    text = (ROOT / "Dockerfile").read_text()
    names = set(re.findall(r"\b(MIRROR_[A-Z_]+)=", text))
    # MIRROR_SQL_DIR is read by the migrator alone (where the image keeps sql/).
    assert names - {"MIRROR_SQL_DIR"} <= Settings.env_names()
    assert "USER mirror" in text
    assert text.count("FROM ") >= 2
