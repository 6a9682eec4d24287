"""Consumer groups (`stream` subscriptions): members, assignments, commits, lag; seek."""

from __future__ import annotations

from roost.admin.endpoints import Call, Endpoint
from roost.admin.schemas import SeekRequest
from roost.core.stats import GroupDescription
from roost.core.streams import AtTime, ResetTarget
from roost.errors import InvalidRequest

GROUPS = "/api/v1/topics/{topic}/groups"
GROUP = GROUPS + "/{group}"


async def list_groups(call: Call) -> list[GroupDescription]:
    topic = call.path["topic"]
    call.door.describe_topic(topic)  # 404 for an unknown topic, not []
    return [
        call.door.describe_group(topic, s.name)
        for s in call.door.list_subscriptions(topic)
        if s.mode == "stream"
    ]


async def describe_group(call: Call) -> GroupDescription:
    return call.door.describe_group(call.path["topic"], call.path["group"])


async def seek(call: Call) -> GroupDescription:
    body: SeekRequest = call.body
    if (body.to is None) == (body.timestamp_ms is None):
        raise InvalidRequest("give exactly one of 'to' and 'timestamp_ms'")
    target: ResetTarget = AtTime(body.timestamp_ms) if body.timestamp_ms is not None else body.to  # type: ignore[assignment]
    topic, group = call.path["topic"], call.path["group"]
    call.door.reset_group(topic, group, target, body.partitions)
    return call.door.describe_group(topic, group)


ENDPOINTS = [
    Endpoint(
        "GET", GROUPS, "List a topic's consumer groups", list_groups, list[GroupDescription],
        errors=(404,), tag="consumer groups",
    ),
    Endpoint(
        "GET", GROUP, "Describe a consumer group: members, assignments, commits, lag",
        describe_group, GroupDescription, errors=(400, 404), tag="consumer groups",
    ),
    Endpoint(
        "POST", GROUP + "/seek", "Move an idle group's committed offsets", seek,
        GroupDescription, body=SeekRequest, errors=(400, 404, 409), tag="consumer groups",
    ),
]  # fmt: skip
