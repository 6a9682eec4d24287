"""``async with thing:`` for the client's objects that must be closed: ``aclose`` on the way
out, whatever happened inside."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosedOnExit:
    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
