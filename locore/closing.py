"""``with obj:`` for the objects that hold a file, a session or an engine and free it in
``close()`` (feature files, runners and backends, feature extractors)."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

_C = TypeVar("_C", bound="Closing")


class Closing:
    """Mixin: ``with obj:`` gives ``obj`` and calls :meth:`close` on the way out, errors too."""

    def close(self) -> None:
        """Free what the object holds (nothing by default)."""

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
