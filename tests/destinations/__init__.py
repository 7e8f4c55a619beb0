"""Tests of datalogger.destinations."""
