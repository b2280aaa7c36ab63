"""Telemetry: metrics (OpenTelemetry SDK, Prometheus text) and logging set-up."""
