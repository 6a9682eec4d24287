"""What an application imports is flat (issue 16, item 4): ``roost.Worker``,
``roost.RetryPolicy``, the errors it catches, each the very class the deep paths name."""

from __future__ import annotations

import inspect

import roost
from roost import errors


def test_every_public_name_is_importable_and_documented() -> None:
    for name in roost.__all__:
        value = getattr(roost, name)
        if name != "errors":
            assert inspect.getdoc(value), f"roost.{name} says what it is"


def test_the_flat_names_are_the_deep_ones() -> None:
    from roost.client.worker import Worker
    from roost.core.retry import RetryPolicy

    assert roost.Worker is Worker
    assert roost.RetryPolicy is RetryPolicy
    assert roost.errors is errors


def test_every_flat_error_is_a_roost_error_and_in_roost_errors() -> None:
    flat = [getattr(roost, n) for n in roost.__all__ if n[0].isupper()]
    exceptions = [c for c in flat if isinstance(c, type) and issubclass(c, BaseException)]
    # A handler raises Reject to ask the worker for something; it is not the broker's error.
    exceptions.remove(roost.Reject)
    assert roost.TopicExists in exceptions and roost.BacklogFull in exceptions
    for cls in exceptions:
        assert issubclass(cls, roost.RoostError)
        assert getattr(errors, cls.__name__) is cls


def test_catching_the_flat_name_catches_what_the_broker_raises(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    async def main() -> None:
        async with roost.open(str(tmp_path / "data")) as broker:
            try:
                await broker.publish("nowhere", b"x")
            except roost.UnknownTopic as e:
                assert e.code == "unknown_topic"
            else:
                raise AssertionError("a publish to a topic that does not exist is refused")

    asyncio.run(main())
