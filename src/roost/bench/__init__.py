"""Benchmarks behind ``roost bench``: each prints figures next to a baseline from the same run."""
