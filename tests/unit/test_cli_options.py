"""Settings flags (mirror/cli_options.py): declared once, they reach ``load_settings``
through the click context; a flag given wins over its MIRROR_* variable, a flag not
given leaves the variable in charge."""

from __future__ import annotations

import click
from click.testing import CliRunner

from mirror.cli_options import (
    kafka_bootstrap_option,
    load_settings,
    scope_option,
    upstream_url_option,
)


@click.command()
@scope_option
@upstream_url_option
@kafka_bootstrap_option
@click.option("--own", default="x", help="A command's own option, still its parameter.")
def probe(own: str) -> None:
    settings = load_settings(log_level="WARNING")
    click.echo(f"own={own}")
    click.echo(f"scopes={','.join(str(s) for s in settings.scopes)}")
    click.echo(f"upstream={settings.upstream_url}")
    click.echo(f"kafka={settings.kafka_bootstrap}")


ENV = {"MIRROR_KAFKA_BOOTSTRAP": "env-host:9092", "MIRROR_SCOPES": "folder:fromenv"}


def test_flags_given_win_over_the_environment() -> None:
    result = CliRunner(env=ENV).invoke(
        probe,
        [
            "--scope",
            "folder:a",
            "--scope",
            "registry:b",
            "--kafka-bootstrap",
            "flag-host:9092",
            "--upstream-url",
            "http://127.0.0.1:9/",
            "--own",
            "y",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "own=y" in lines
    assert "scopes=folder:a,registry:b" in lines
    assert "kafka=flag-host:9092" in lines
    assert any(line.startswith("upstream=http://127.0.0.1:9") for line in lines), lines


def test_flags_not_given_leave_the_environment_in_charge() -> None:
    result = CliRunner(env=ENV).invoke(probe, [])
    assert result.exit_code == 0, result.output
    assert "scopes=folder:fromenv" in result.output.splitlines()
    assert "kafka=env-host:9092" in result.output.splitlines()


def test_a_malformed_flag_is_one_configuration_line_naming_it() -> None:
    result = CliRunner(env=ENV).invoke(probe, ["--scope", "nonsense"])
    assert result.exit_code == 2
    assert "configuration error: --scope" in result.output
