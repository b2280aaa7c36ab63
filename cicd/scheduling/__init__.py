"""Scheduling: placement of runnable jobs on nodes with capacity."""
