"""``ctx.gather`` under the Celery executor: the calls of a fan-out become the tasks of a Celery chord.

The pipelines' code does not change, and a coroutine cannot travel to another machine, so an item is found again by
replaying its step: every run of a step on a node counts the step's ``ctx.gather`` calls (``ordinal``) and

* in the step's own task (``ChordFanOut(None)``), a gather whose items are all recorded returns their recorded
  results; one with items missing closes its coroutines and raises ``FanOutRequested``: the task sends a chord — one
  ``modelhost.step_item(job, step, ordinal, i)`` per missing item, then ``modelhost.step(job, step)`` again as its
  callback, which replays the step and gets past the gather with every result recorded;
* in an item's task (``ChordFanOut((ordinal, i))``), the step replays up to gather ``ordinal``, awaits only call
  ``i`` (the others are closed unawaited), records its result under ``<step>/~fan-<ordinal>/<i>`` and stops the step
  with ``ItemFinished``.

So the code of a step before its ``ctx.gather`` runs once per item (it must be deterministic, and is cheap in the
built-in pipelines: it reads recorded outputs) and gathered results must be JSON. A recorded item is never run again
(a redelivered item does no harm); an item holds its own lease while it runs (``steps.StepRunner.run_item``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelhost.jobs.pipeline import StepContext


def item_key(step: str, ordinal: int, index: int) -> str:
    """The recorded output of item ``index`` of the step's gather number ``ordinal``."""
    return f"{step}/~fan-{ordinal}/{index}"


class FanOutRequested(Exception):
    """A step reached a gather with unrecorded items: its task sends them as a chord (not a failure)."""

    def __init__(self, ordinal: int, size: int, missing: list[int]) -> None:
        super().__init__(f"gather {ordinal}: {len(missing)} of {size} items to run")
        self.ordinal = ordinal
        self.size = size
        self.missing = missing


class ItemFinished(Exception):
    """An item of a chord ran and was recorded: the rest of the step is not this task's work."""


def _close(calls: tuple[Coroutine[Any, Any, Any], ...], keep: int | None = None) -> None:
    for index, call in enumerate(calls):
        if index != keep:
            call.close()  # never awaited on purpose: no "coroutine was never awaited" warning


class ChordFanOut:
    """The ``ctx.fan_out`` of a step run on a node; ``item`` is ``(ordinal, index)`` in an item's task, else None."""

    def __init__(self, item: tuple[int, int] | None = None) -> None:
        self.item = item
        self.ordinal = 0

    def reset(self) -> None:
        """Called before each attempt of the step (a retried step counts its gathers from zero again)."""
        self.ordinal = 0

    async def gather(
        self, ctx: StepContext, calls: tuple[Coroutine[Any, Any, Any], ...], _limit: int | None
    ) -> list[Any]:
        """``ctx.gather`` on a node. ``limit`` does not apply: the items are tasks, as many at once as the nodes'
        Celery threads (``--concurrency``) take."""
        ordinal = self.ordinal
        self.ordinal += 1
        keys = [item_key(ctx.step, ordinal, i) for i in range(len(calls))]
        missing = [i for i, key in enumerate(keys) if key not in ctx.outputs]
        if not missing:
            _close(calls)
            return [ctx.outputs[key] for key in keys]
        if self.item is None or self.item[0] != ordinal:
            # The step's own task, or an item of a later gather replaying an earlier gather that is not complete
            # (the chord callback will replay the step and fan it out): nothing runs here.
            _close(calls)
            raise FanOutRequested(ordinal, len(calls), missing)
        index = self.item[1]
        if index >= len(calls):
            _close(calls)
            raise RuntimeError(
                f"job {ctx.job_id} step {ctx.step}: gather {ordinal} has {len(calls)} calls on replay, item {index} "
                "was sent (the code before ctx.gather must be deterministic)"
            )
        _close(calls, keep=index)
        if keys[index] not in ctx.outputs:
            ctx.check_cancelled()
            value = await calls[index]
            await asyncio.to_thread(ctx._store.record_step, ctx.job_id, keys[index], value)
            ctx.outputs[keys[index]] = value
        else:
            calls[index].close()
        recorded = await asyncio.to_thread(ctx._store.recorded_count, ctx.job_id, keys)
        await ctx.progress(recorded / len(keys))
        raise ItemFinished(keys[index])
