"""Simulated sensors logged to InfluxDB 1.x over HTTP, with tags.

Each reading is a row; the destination turns it into a point of the
measurement ``sensors``: ``sensor`` and ``room`` become tags, ``time`` the
timestamp, the other keys fields. Then the example asks InfluxDB, through the
destination's ``query()``, for the count and mean temperature per sensor.

Run it from a checkout, against an InfluxDB 1.x you may create a database in::

    python examples/influx_sensor_logger.py --host 127.0.0.1 --port 8086 --database sensors
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import datalogger

SENSORS = {"s1": ("kitchen", 21.0), "s2": ("kitchen", 22.0), "s3": ("cellar", 12.0)}
"""sensor -> (room, base temperature)."""


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def readings(count: int, start: datetime) -> list[dict[str, Any]]:
    """``count`` readings per sensor, one a second; each sensor's mean is its base + 1."""
    return [
        {
            "time": start + timedelta(seconds=i),
            "sensor": sensor,
            "room": room,
            "temperature": base + (i % 5) * 0.5,  # base, base + 0.5, ... base + 2, repeated
            "humidity": 40 + i % 3,
        }
        for i in range(count)
        for sensor, (room, base) in SENSORS.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Log simulated readings, then print a query's answer per sensor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8086, help="InfluxDB's HTTP port")
    parser.add_argument("--database", default="sensors", help="created if missing")
    parser.add_argument("--readings", type=int, default=60, help="per sensor (a multiple of 5)")
    parser.add_argument("--admin-port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "data_dir": f"{tmp}/state",
            "destinations": {
                "influx": {
                    "type": "influxdb",
                    "protocol": "http",
                    "host": args.host,
                    "http_port": args.port,
                    "database": args.database,
                    "measurement": "{topic}",
                    "tags": ["sensor", "room"],
                    "precision": "s",
                }
            },
        }
        port = args.admin_port or free_port()
        with datalogger.start(config, admin_port=port, make_default=False) as dl:
            influx = dl.destination("influx")  # a local instance, for ping and queries
            if not influx.ping():
                print(f"InfluxDB does not answer on {args.host}:{args.port}")
                return 1
            influx.post_query(f'CREATE DATABASE "{args.database}"')
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
            rows = readings(args.readings, start)
            for first in range(0, len(rows), 50):
                dl.log("sensors", rows[first : first + 50])
            dl.flush(timeout=60)
            print(f"logged {len(rows)} readings from {len(SENSORS)} sensors")

            series = influx.query(
                'SELECT count("temperature"), mean("temperature") FROM "sensors" '
                'GROUP BY "sensor", "room"'
            )
            for item in sorted(series, key=lambda s: s["tags"]["sensor"]):
                _time, count, mean = item["values"][0]
                tags = item["tags"]
                print(f"{tags['sensor']} ({tags['room']}): {count} readings, mean {mean:.2f} C")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
