"""End-to-end tests through the whole actor tree (multiprocTCPBase) into real servers.

They count what arrived by querying PostgreSQL and InfluxDB themselves. Servers
are found with the helpers of :mod:`tests.services`: absent servers skip the
tests, or fail them when ``DATALOGGER_REQUIRE_SERVICES=1``.
"""
