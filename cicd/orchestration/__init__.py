"""Runs and jobs: their state machines, their plan through the job graph, the run driver."""
