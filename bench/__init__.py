"""Benchmarks: ``python -m bench <case> [--quick] [--rounds N] [--json PATH]``.

Cases: postgres, influxdb, per_row, latency, topics, outage, wal_fsync,
middleware, logging, all; ``python -m bench plot`` draws docs/img/throughput_vs_chunk.png
and ``python -m bench.profile <case>`` profiles a case's node with py-spy.
See docs/performance.md.
"""
