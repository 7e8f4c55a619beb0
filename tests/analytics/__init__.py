"""Tests of datalogger.analytics (request log, middleware, summaries)."""
