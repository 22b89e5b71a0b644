"""How pending migration steps are counted in messages (pure)."""

from pathlib import Path

from mirror.store.migrate import Migration, Routine, count_steps


def test_the_routines_that_follow_a_migration_are_not_counted_as_migrations() -> None:
    migration = Migration(119, "119_x", Path("119_x.sql"))
    routines = [Routine(n, Path(f"{n}.sql"), b"") for n in ("outbox", "stats")]
    assert count_steps([migration, *routines]) == "1 migration(s)"
    assert count_steps(routines) == "2 routine file(s)"
