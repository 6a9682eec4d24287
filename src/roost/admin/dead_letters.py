"""Dead letters: where they are, what they say, and moving them back (redrive)."""

from __future__ import annotations

from roost.admin.endpoints import Call, Endpoint
from roost.admin.schemas import (
    DeadLetterQuery,
    DeadLetters,
    MessageView,
    Moved,
    RedriveRequest,
    peeked_views,
)
from roost.core.redrive import RedriveFilter, RedriveTask
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
    query: DeadLetterQuery = call.query
    after = None
    if query.after is not None:
        partition, _, offset = query.after.partition("@")
        after = (int(partition), int(offset))
    topic = call.path["topic"]
    return peeked_views(call.door.peek_dead_letters(topic, query.limit, query.partition, after))


async def redrive(call: Call) -> Moved:
    """Runs until every matching dead letter has moved, at ``rate_per_s`` at most: a large
    redrive at a low rate is a long request (``redrive-tasks`` runs one in the background)."""
    body: RedriveRequest = call.body
    return Moved(
        await call.door.redrive(call.path["topic"], _filter(body), body.rate_per_s, body.to)
    )


def _filter(body: RedriveRequest) -> RedriveFilter:
    return RedriveFilter(
        source_topic=body.source_topic,
        key=None if body.key is None else body.key.encode(),
        error_contains=body.error_contains,
        headers=None if body.headers is None else {k: v.encode() for k, v in body.headers.items()},
    )


async def start_redrive_task(call: Call) -> RedriveTask:
    body: RedriveRequest = call.body
    return call.door.start_redrive(call.path["topic"], _filter(body), body.rate_per_s, body.to)


async def list_redrive_tasks(call: Call) -> list[RedriveTask]:
    return call.door.list_redrives(call.path.get("topic"))


async def cancel_redrive_task(call: Call) -> RedriveTask:
    return await call.door.cancel_redrive(call.path["topic"], call.path["task"])


ENDPOINTS = [
    Endpoint(
        "GET", "/api/v1/dead-letters", "Dead-letter topics and how many letters wait in each",
        list_dead_letters, list[DeadLetters], tag="dead letters",
    ),
    Endpoint(
        "GET", DEAD_LETTER_TOPIC + "/dead-letters",
        "Peek at a dead-letter topic's letters not yet redriven, with why they died",
        peek_dead_letters, list[MessageView], query=DeadLetterQuery, errors=(400, 404),
        tag="dead letters",
    ),
    Endpoint(
        "POST", DEAD_LETTER_TOPIC + "/redrive",
        "Move dead letters back to their source (all, or those matching), rate-limited",
        redrive, Moved, body=RedriveRequest, errors=(400, 404), tag="dead letters",
    ),
    Endpoint(
        "POST", DEAD_LETTER_TOPIC + "/redrive-tasks",
        "Start a redrive in the background (SQS's message move task); answered at once",
        start_redrive_task, RedriveTask, 201, RedriveRequest, errors=(400, 404),
        tag="dead letters",
    ),
    Endpoint(
        "GET", DEAD_LETTER_TOPIC + "/redrive-tasks",
        "A dead-letter topic's redrive tasks, newest first, with their progress",
        list_redrive_tasks, list[RedriveTask], tag="dead letters",
    ),
    Endpoint(
        "GET", "/api/v1/redrive-tasks", "Every redrive task, newest first, with its progress",
        list_redrive_tasks, list[RedriveTask], tag="dead letters",
    ),
    Endpoint(
        "DELETE", DEAD_LETTER_TOPIC + "/redrive-tasks/{task}",
        "Cancel a running redrive task (what it moved stays moved)",
        cancel_redrive_task, RedriveTask, errors=(404,), tag="dead letters",
    ),
]  # fmt: skip
