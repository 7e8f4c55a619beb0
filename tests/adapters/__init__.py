"""Tests of the process-status storage adapters."""
