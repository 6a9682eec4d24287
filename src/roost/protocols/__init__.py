"""Wire protocols as sans-IO codecs: bytes in, events out; events in, bytes out.

No asyncio, no sockets, no core here: the server feeds a codec what it reads and writes what
the codec returns, and a session (later, per protocol) maps events onto core commands.
"""
