"""Green and red: two topics, one PostgreSQL destination, a schema per topic.

The relational example of Elixir's data_logger, in Python: rows logged to the
topic ``green`` land in the schema ``green``, rows logged to ``red`` in the
schema ``red``, both through the one destination configured below. Each topic
has its own supervisor and worker, so trouble with red never holds green up.

Run it from a checkout, against a PostgreSQL you may create schemas in::

    python examples/green_red_postgres.py --dsn postgresql://postgres@127.0.0.1:5432/test

The ``id`` column is the conflict key: running the example again adds no rows.
"""

from __future__ import annotations

import argparse
import socket
import tempfile

import psycopg
from psycopg import sql

import datalogger

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Log green and red readings, then count the rows in each schema."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"default {DEFAULT_DSN}")
    parser.add_argument("--schema-prefix", default="", help="put before each schema name")
    parser.add_argument("--rows", type=int, default=300, help="green rows (red gets a third)")
    parser.add_argument("--admin-port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "data_dir": f"{tmp}/state",
            "destinations": {
                "db": {
                    "type": "postgres",
                    "dsn": args.dsn,
                    "schema": args.schema_prefix + "{topic}",  # green -> green, red -> red
                    "table": "readings",
                    "conflict_key": ["id"],
                },
            },
        }
        port = args.admin_port or free_port()
        with datalogger.start(config, admin_port=port, make_default=False) as dl:
            green = [{"id": i, "value": i * 0.5} for i in range(args.rows)]
            red = [{"id": i, "value": -i, "alarm": i % 7 == 0} for i in range(args.rows // 3)]
            for start in range(0, len(green), 100):  # log in chunks, as an application would
                dl.log("green", green[start : start + 100])
            dl.log("red", red)
            dl.flush(timeout=60)
            print(f"logged {len(green)} green rows and {len(red)} red rows")

    with psycopg.connect(args.dsn) as conn:
        for topic in ("green", "red"):
            schema = args.schema_prefix + topic
            query = sql.SQL("SELECT count(*) FROM {}.readings").format(sql.Identifier(schema))
            row = conn.execute(query).fetchone()
            print(f"{schema}.readings: {row[0] if row else 0} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
