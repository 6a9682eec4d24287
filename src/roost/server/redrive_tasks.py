"""Redrives as tasks: started, listed with their progress, cancelled, and resumed after a
restart — SQS's message move tasks (``StartMessageMoveTask``, ``ListMessageMoveTasks``,
``CancelMessageMoveTask``).

    task = tasks.start("emails.dlq", RedriveFilter(source_topic="emails"), rate_per_s=50)
    tasks.list()                 # newest first: state, moved so far, how many there were
    await tasks.cancel(task.id)

A task runs ``Host.redrive`` in the background (the same batches: each copy durable before its
dead letter is acked, so a crash moves a message twice at worst, never loses one). Rules:

- One running task per dead-letter topic, as SQS allows one active task per source queue: a
  second start while one runs is refused (``InvalidRequest`` naming the running one).
- Every task is a record in the metadata store (``redrive_tasks``), written when it starts,
  when it ends, and with its progress at most once a second (``SAVE_EVERY_MS``) while it runs.
  A restart finds the tasks that were running and starts them again from where the dead-letter
  topic is: what was moved is acked and stays moved; ``moved`` goes on from the last saved
  count (approximate, as SQS's ``ApproximateNumberOfMessagesMoved``).
- ``state``: ``running``, then ``completed`` (every matching dead letter moved), ``cancelled``
  or ``failed`` (with ``error``). Closing the broker stops running tasks without ending them:
  they are running again after the restart.
- The newest ``KEEP_FINISHED`` finished tasks are kept; older ones are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable

import msgspec

from roost.clock import Clock
from roost.core.redrive import RedriveFilter, RedriveTask, TaskState
from roost.errors import InvalidConfig, InvalidRequest, RoostError, UnknownRedriveTask
from roost.storage.metadata import MetadataStore

log = logging.getLogger("roost.redrive")

NAMESPACE = "redrive_tasks"
SAVE_EVERY_MS = 1000
KEEP_FINISHED = 100

#: ``run(dead_letter_topic, where, rate_per_s, to, on_progress)``: moves, returns how many.
Run = Callable[[str, RedriveFilter, float, "str | None", Callable[[int], None]], Awaitable[int]]


def check_rate(rate_per_s: float) -> None:
    """A redrive's rate: positive and finite (inf would make its batch size raise)."""
    if isinstance(rate_per_s, bool) or not 0 < rate_per_s < math.inf:
        raise InvalidConfig("rate", rate_per_s, "a positive number of messages per second")


class RedriveTasks:
    def __init__(
        self, metadata: MetadataStore, clock: Clock, run: Run, waiting: Callable[[str], int]
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self._run = run
        self._waiting = waiting
        self._tasks: dict[str, RedriveTask] = {
            name: msgspec.convert(metadata.get(NAMESPACE, name), RedriveTask)
            for name in metadata.names(NAMESPACE)
        }
        self._running: dict[str, asyncio.Task[None]] = {}
        self._saved_ms: dict[str, int] = {}
        self._closing = False

    def resume(self) -> None:
        """Start again the tasks a stop or a crash left running."""
        for task in list(self._tasks.values()):
            if task.state == "running":
                log.info("redrive task %s of %s: resumed", task.id, task.dead_letter_topic)
                self._spawn(task)

    def start(
        self, dead_letter_topic: str, where: RedriveFilter, rate_per_s: float, to: str | None
    ) -> RedriveTask:
        for other in self._tasks.values():
            if other.state == "running" and other.dead_letter_topic == dead_letter_topic:
                raise InvalidRequest(
                    f"redrive task {other.id} is moving {dead_letter_topic}'s dead letters: "
                    "wait for it or cancel it first"
                )
        task = RedriveTask(
            id=secrets.token_hex(8), dead_letter_topic=dead_letter_topic, where=where,
            rate_per_s=rate_per_s, to=to, state="running", moved=0,
            to_move=self._waiting(dead_letter_topic), started_ms=self._clock.now_ms(),
        )  # fmt: skip
        self._save(task)
        self._spawn(task)
        return task

    def list(self, dead_letter_topic: str | None = None) -> list[RedriveTask]:
        """Newest first; those of ``dead_letter_topic`` only, if given."""
        found = [
            task
            for task in self._tasks.values()
            if dead_letter_topic is None or task.dead_letter_topic == dead_letter_topic
        ]
        return sorted(found, key=lambda t: (t.started_ms, t.id), reverse=True)

    def get(self, task_id: str) -> RedriveTask:
        task = self._tasks.get(task_id)
        if task is None:
            raise UnknownRedriveTask(task_id)
        return task

    async def cancel(self, task_id: str) -> RedriveTask:
        """Stop a running task (what it moved stays moved); a finished one is left as it is."""
        task = self.get(task_id)
        running = self._running.get(task_id)
        if task.state != "running" or running is None:
            return task
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        self._running.pop(task_id, None)
        if self.get(task_id).state == "running":  # cancelled before it ever ran
            self._end(task_id, "cancelled")
        return self.get(task_id)

    async def aclose(self) -> None:
        """Stop the running tasks, leaving them ``running`` in the store: a restart resumes
        them."""
        self._closing = True
        for task_id, running in list(self._running.items()):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            self._running.pop(task_id, None)

    # -- running ----------------------------------------------------------------------------

    def _spawn(self, task: RedriveTask) -> None:
        self._running[task.id] = asyncio.create_task(self._drive(task), name=f"redrive-{task.id}")

    async def _drive(self, task: RedriveTask) -> None:
        base = task.moved  # resumed: counted on from what was saved

        def progress(moved: int) -> None:
            current = msgspec.structs.replace(self.get(task.id), moved=base + moved)
            self._tasks[task.id] = current
            if self._clock.now_ms() - self._saved_ms.get(task.id, 0) >= SAVE_EVERY_MS:
                self._save(current)

        try:
            moved = await self._run(
                task.dead_letter_topic, task.where, task.rate_per_s, task.to, progress
            )
        except asyncio.CancelledError:
            if self._closing:
                self._save(self.get(task.id))  # progress so far; running again on restart
            else:
                self._end(task.id, "cancelled")
            raise
        except RoostError as e:
            log.warning("redrive task %s of %s failed: %s", task.id, task.dead_letter_topic, e)
            self._end(task.id, "failed", error=str(e))
        else:
            self._tasks[task.id] = msgspec.structs.replace(self.get(task.id), moved=base + moved)
            self._end(task.id, "completed")
        finally:
            self._running.pop(task.id, None)

    def _end(self, task_id: str, state: TaskState, error: str | None = None) -> None:
        ended = msgspec.structs.replace(
            self.get(task_id), state=state, finished_ms=self._clock.now_ms(), error=error
        )
        self._save(ended)
        self._forget_old()

    def _save(self, task: RedriveTask) -> None:
        self._tasks[task.id] = task
        try:
            with self._metadata.transaction() as txn:
                txn.put(NAMESPACE, task.id, msgspec.to_builtins(task))
            self._saved_ms[task.id] = self._clock.now_ms()
        except RoostError as e:  # the store refuses writes: the task runs on, unsaved
            log.warning("redrive task %s: its progress could not be saved: %s", task.id, e)

    def _forget_old(self) -> None:
        finished = [t for t in self.list() if t.state != "running"]
        for old in finished[KEEP_FINISHED:]:
            del self._tasks[old.id]
            with contextlib.suppress(RoostError), self._metadata.transaction() as txn:
                txn.delete(NAMESPACE, old.id)
