"""The bus: wire format, event catalogue, proxy, client, node runtime, event log, replay."""
