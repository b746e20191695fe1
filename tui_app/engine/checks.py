"""The ASR check: each speech take transcribed and compared with its text, as a step of its own.

A take is recorded first (generation never waits for its check); then a worker claims unchecked
takes from the store (:meth:`~tui_app.store.base.Store.claim_checks`, held for a lease so a check
cut short by a crash is done again by any worker), transcribes them with the ``[qa.asr]``
transcriber (pocketsphinx offline by default, or an OpenAI-compatible ``/audio/transcriptions``
server) at the ASR's own concurrency, and stores the word and character error rates with the
take's QA metrics, its QA flags recomputed (:func:`tui_app.qa.take_flags`, ``asr_mismatch`` and
``truncated`` now judged). A take whose file is gone or unreadable is recorded as checked with an
``asr_error`` metric, never retried in a loop.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from collections.abc import Sequence
from typing import Any

import anyio

from ..asr import asr_metrics, make_transcriber
from ..kinds import get_kind
from ..project import Project
from ..providers import ProviderError
from ..qa import take_flags
from ..store import TakeFile, tolerate_outage

#: Takes one claim of checks takes at most, per slot of the ASR's concurrency.
CLAIM_PER_SLOT = 2
#: Seconds between tries while the PostgreSQL state is unreachable.
OUTAGE_RETRY_S = 1.0


class Checker:
    """Runs the ASR checks of one project's measured collections (see the module docstring).

    Args:
        project: the open project (its config's ``qa`` and ``asr`` settings).
        transcriber: a :class:`~tui_app.asr.Transcriber` (blocking, run in threads) or an
            :class:`~tui_app.asr.AsyncTranscriber` (awaited); None: no checks.
    """

    def __init__(self, project: Project, transcriber: Any):
        self.project = project
        self.store = project.store
        self.transcriber = transcriber
        self.thresholds = project.config.qa
        self.concurrency = max(1, project.config.asr.concurrency)
        self._limiter = anyio.CapacityLimiter(self.concurrency)
        self._due = anyio.Event()
        self._draining = False
        self.checked = 0
        self.failed = 0

    def collections(self, names: Sequence[str] | None) -> list[str]:
        """The selected collections whose takes are measured (speech), but for the simulated
        provider's (its tones are not speech)."""
        providers = self.project.config.providers
        if not self.thresholds.enabled:
            return []
        return [
            c.name
            for c in self.project.collections(names)
            if get_kind(c.kind).measured and providers[c.provider].kind != "simulated"
        ]

    def notify(self) -> None:
        """A take was recorded: look for work now."""
        self._due.set()

    def drain(self) -> None:
        """Let :meth:`run` return once nothing is left to check (the end of a ``--batch``)."""
        self._draining = True
        self._due.set()

    async def run(self, names: Sequence[str] | None, *, until_idle: bool) -> None:
        """Check the unchecked takes of the selected collections; with ``until_idle`` return once
        none is left (what other workers hold is theirs), else wait for :meth:`notify` (or poll
        every ``lease_s``, for takes other workers recorded) until cancelled."""
        colls = self.collections(names)
        if not colls or self.transcriber is None:
            return
        hold_s = max(60.0, 4 * self.project.config.lease_s)
        while True:
            batch = []
            with tolerate_outage(self.store) as outage:
                batch = self.store.claim_checks(colls, self.concurrency * CLAIM_PER_SLOT, hold_s)
            if outage.error is not None:
                await anyio.sleep(OUTAGE_RETRY_S)  # the database is away: its checks wait, the run goes on
                continue
            if batch:
                async with anyio.create_task_group() as tg:
                    for found in batch:
                        tg.start_soon(self._check, found)
                continue
            if until_idle or self._draining:
                return
            self._due = anyio.Event()
            with anyio.move_on_after(self.project.config.lease_s):
                await self._due.wait()

    async def _check(self, found: TakeFile) -> None:
        take = found.take
        item = None  # without the database, the check's hold expires: it is claimed again once it is back
        with tolerate_outage(self.store):
            item = self.store.get_item(take.item_id)
        if item is None:
            return
        text = str(item.params.get("normalized") or item.text)
        metrics: dict[str, Any]
        async with self._limiter:
            try:
                wav = await anyio.to_thread.run_sync((self.project.root / take.path).read_bytes)
                transcript = await self._transcribe(wav)
                metrics = asr_metrics(text, transcript)
            except (OSError, ValueError, ProviderError) as exc:
                message = exc.message if isinstance(exc, ProviderError) else str(exc)
                metrics = {"asr_error": message[:300]}
                self.failed += 1
            except anyio.get_cancelled_exc_class():
                with tolerate_outage(self.store):  # without the database, the check's hold expires instead
                    self.store.release_check(take.id)  # stopped (synchronous): any worker checks it again
                raise
        merged = {**(take.qa or {}), **metrics}
        codes = take_flags(merged, self.thresholds) if "asr_error" not in metrics else None
        flags = ", ".join(codes) if codes else (take.qa_flags if codes is None else None)
        while True:  # a transcript is kept until the database takes it
            with tolerate_outage(self.store) as outage:
                recorded = self.store.record_check(take.id, _finite(metrics), flags)
            if outage.error is None:
                break
            await anyio.sleep(OUTAGE_RETRY_S)
        if recorded:
            self.checked += 1

    async def _transcribe(self, wav: bytes) -> str:
        method = self.transcriber.transcribe
        if inspect.iscoroutinefunction(method):
            return str(await method(wav))
        return str(await anyio.to_thread.run_sync(method, wav, abandon_on_cancel=True))

    async def aclose(self) -> None:
        """Release the transcriber's resources (an HTTP client's connections)."""
        close = getattr(self.transcriber, "aclose", None)
        if close is not None:
            await close()


def build_checker(project: Project) -> Checker:
    """The project's checker, with the ``[qa.asr]`` transcriber (none for ``engine = "none"``, and
    none, with a warning in the log, when pocketsphinx, the offline default, is not installed).

    Raises:
        ProviderError: ``api_key_env`` names an unset variable.
    """
    settings = project.config.asr
    if settings.engine == "pocketsphinx" and importlib.util.find_spec("pocketsphinx") is None:
        if any(get_kind(c.kind).measured for c in project.collections(None)):
            project.log(
                "warning",
                "qa",
                "ASR check off: pocketsphinx is not installed (pip install pocketsphinx), "
                'or set [qa.asr] engine = "none"',
            )
        return Checker(project, None)
    return Checker(project, make_transcriber(settings))


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: such a metric is stored as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


__all__ = ["Checker", "build_checker"]
