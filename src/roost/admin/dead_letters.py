"""Dead letters: where they are, what they say, and moving them back (redrive)."""

from __future__ import annotations

from roost.admin.endpoints import Call, Endpoint
from roost.admin.schemas import (
    DeadLetters,
    MessageView,
    Moved,
    PeekQuery,
    RedriveRequest,
    peeked_views,
)
from roost.core.redrive import RedriveFilter
from roost.core.stats import SubscriptionStats

DEAD_LETTER_TOPIC = "/api/v1/topics/{topic}"


async def list_dead_letters(call: Call) -> list[DeadLetters]:
    """Every queue or keyed subscription with a dead-letter topic, and how many wait there."""
    found = []
    for spec in call.door.list_subscriptions():
        if spec.mode == "stream" or spec.dead_letter is None:
            continue
        stats = call.door.stats(spec.topic, spec.name)
        assert isinstance(stats, SubscriptionStats)
        found.append(DeadLetters(spec.topic, spec.name, spec.dead_letter, stats.dead_letters))
    return found


async def peek_dead_letters(call: Call) -> list[MessageView]:
    query: PeekQuery = call.query
    peeked = call.door.peek_dead_letters(call.path["topic"], query.limit, query.partition)
    return peeked_views(peeked)


async def redrive(call: Call) -> Moved:
    """Runs until every matching dead letter has moved, at ``rate_per_s`` at most: a large
    redrive at a low rate is a long request."""
    body: RedriveRequest = call.body
    where = RedriveFilter(
        source_topic=body.source_topic,
        key=None if body.key is None else body.key.encode(),
        error_contains=body.error_contains,
        headers=None if body.headers is None else {k: v.encode() for k, v in body.headers.items()},
    )
    return Moved(await call.door.redrive(call.path["topic"], where, body.rate_per_s, body.to))


ENDPOINTS = [
    Endpoint(
        "GET", "/api/v1/dead-letters", "Dead-letter topics and how many letters wait in each",
        list_dead_letters, list[DeadLetters], tag="dead letters",
    ),
    Endpoint(
        "GET", DEAD_LETTER_TOPIC + "/dead-letters",
        "Peek at a dead-letter topic's letters not yet redriven, with why they died",
        peek_dead_letters, list[MessageView], query=PeekQuery, errors=(400, 404),
        tag="dead letters",
    ),
    Endpoint(
        "POST", DEAD_LETTER_TOPIC + "/redrive",
        "Move dead letters back to their source (all, or those matching), rate-limited",
        redrive, Moved, body=RedriveRequest, errors=(400, 404), tag="dead letters",
    ),
]  # fmt: skip
