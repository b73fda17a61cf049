"""OpenTelemetry spans and metrics, and the observable gauges read on exporter threads."""
