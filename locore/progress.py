"""The one progress helper: a tqdm bar over an iterable, or a manual bar, or nothing.

Library code takes ``progress: bool`` and wraps its loop in :func:`progress_bar`; the bar goes to
stderr (tqdm's default) and disappears when disabled, so logs and ``--quiet`` runs stay clean.

>>> for item in progress_bar(items, desc="re-ranking", unit="query", enabled=show):
...     ...
>>> with progress_bar(total=steps, initial=start, desc="train", unit="step") as bar:
...     bar.update(1)
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import Any


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    initial: int = 0,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
) -> Any:
    """A tqdm bar (``tqdm.auto``) over ``iterable`` or, without one, a manual bar of ``total``.

    With ``enabled=False`` the bar is disabled: iterating yields the items, ``update``,
    ``set_postfix`` and ``close`` do nothing.
    """
    from tqdm.auto import tqdm

    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        leave=leave,
        dynamic_ncols=True,
    )
