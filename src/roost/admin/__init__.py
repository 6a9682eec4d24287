"""The HTTP admin layer: a JSON admin API over the host, served by uvicorn on the broker's loop.

- ``endpoints.py``: how an endpoint is declared; decoding, errors, the one serving function
- ``schemas.py``: request and response bodies (msgspec Structs)
- ``health.py``, ``topics.py``, ``queues.py``, ``exchanges.py``, ``dead_letters.py``,
  ``groups.py``, ``identities.py``: the endpoints, one resource each
- ``openapi.py``: the OpenAPI document, generated from the endpoints
- ``app.py``: ``build_app(host, extra_routes=(), config=None)``, the Starlette app
- ``auth.py``: the gate in front of every route (Host, Origin, JSON, who is asking, CSRF);
  ``hosts.py`` the Host and Origin rules, ``sessions.py`` the dashboard's cookie sessions,
  ``login.py`` ``/login``, ``/logout``, ``/session`` and the login page, ``config.py``
  ``AdminConfig``, the part of the settings they read
- ``server.py``: ``AdminServer``, uvicorn as a task on the running loop
- ``metrics.py``: the Prometheus collector of a host and ``render`` for ``/metrics``
"""
