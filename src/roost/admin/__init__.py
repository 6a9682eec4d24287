"""Operating a running broker: the HTTP admin API, Prometheus metrics, the dashboard."""
