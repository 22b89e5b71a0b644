"""The PostgreSQL side: the pool, migrations, the embedded server and every SQL statement."""
