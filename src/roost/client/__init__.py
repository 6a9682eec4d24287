"""The Python client: ``roost.open(path)`` runs a broker in-process (embedded mode)."""
