"""Roost: a message broker in one process — work queues, routing and replayable logs."""

__version__ = "0.1.0"
