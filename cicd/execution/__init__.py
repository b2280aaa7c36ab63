"""Execution: steps inside a worker, their output, exit codes, timeouts and signals."""
