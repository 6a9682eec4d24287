"""The ``roost`` command line: parse, call, print."""
