"""The ``dataset`` kind: TTS entries (LJSpeech ``metadata.csv`` or a festvox prompt list) -> WAV takes."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from ..exports.dataset import DATASET_FORMATS, export_dataset
from ..settings import CollectionConfig, TableReader, show
from ..sources import DEFAULT_MAX_TEXT_CHARS
from ..sources.dataset import read_dataset
from ..store.rows import Item, SourceItem
from .base import Column, Kind, OverrideField
from .columns import kilobytes, qa_metric, qa_or_error, review, seconds

_COLUMN_NAMES = {"id", "text", "normalized", "emotion", "ignore"}


def _speed(text: str) -> float:
    """A speaking-rate override: a factor from 0.1 to 10 (1 = the voice's own pace)."""
    value = float(text)
    if not 0.1 <= value <= 10:
        raise ValueError(text)
    return value


class DatasetKind(Kind):
    """Speech clips of a voice dataset: one WAV take per entry, with QA metrics."""

    name = "dataset"
    task = "speech"
    media = "audio"
    measured = True
    exporters = {fmt: partial(export_dataset, fmt=fmt) for fmt in DATASET_FORMATS}
    columns = (
        Column("id", 14, lambda r: r.key),
        Column("text", 40, lambda r: r.text),
        Column("emotion", 8, lambda r: str(r.params.get("emotion", ""))),
        Column("status", 10, lambda r: r.status),
        Column("att", 3, lambda r: str(r.attempts)),
        Column("dur s", 6, lambda r: seconds(r.duration_s)),
        Column("KB", 5, lambda r: kilobytes(r.bytes)),
        Column("take", 4, lambda r: str(r.take_number or "")),
        Column("rv", 2, review),
        Column("WER", 4, qa_metric("wer", 2)),
        Column("LUFS", 5, qa_metric("loudness_lufs", 1)),
        Column("QA or error", 34, qa_or_error),
    )
    override_fields = (
        OverrideField("emotion", "emotion (e.g. happy, sad, angry; empty = as in the source)"),
        OverrideField("speed", "speed factor 0.1..10 (empty = the collection's)", _speed),
    )

    def parse_params(self, reader: TableReader, presets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """``format`` (auto, ljspeech, festvox), ``columns``, ``voice``, ``model``, ``speed`` (> 0.1),
        ``max_text_chars`` (longest text, normalized text or emotion accepted from the source)."""
        params: dict[str, Any] = {}
        fmt = reader.get("format", str, "auto")
        if fmt not in ("auto", "ljspeech", "festvox"):
            raise reader.error("format", f"must be auto, ljspeech or festvox, got {show(fmt)}")
        params["format"] = fmt
        names = "|".join(sorted(_COLUMN_NAMES))
        columns = reader.strings(
            "columns", None, pattern=names, what=f"column names ({names.replace('|', ', ')})"
        )
        if columns is not None:
            named = [c for c in columns if c != "ignore"]
            if "id" not in columns or "text" not in columns or len(named) != len(set(named)):
                raise reader.error(
                    "columns",
                    f"must list column names from {sorted(_COLUMN_NAMES)} including id and text, "
                    "each once (ignore may repeat)",
                )
            params["columns"] = columns
        for key in ("voice", "model"):
            value = reader.get(key, str, None)
            if value is not None:
                params[key] = value
        params["speed"] = reader.number("speed", 1.0, minimum=0.1)
        params["max_text_chars"] = reader.number(
            "max_text_chars", DEFAULT_MAX_TEXT_CHARS, minimum=1, integer=True
        )
        return params

    def load_items(
        self, collection: CollectionConfig, presets: Mapping[str, Mapping[str, Any]]
    ) -> list[SourceItem]:
        return read_dataset(collection.source, collection.params)

    def seed(self, params: Mapping[str, Any], overrides: Mapping[str, Any], fresh: bool) -> int | None:
        """An override, else the entry's own seed; entries have none unless given (TTS is deterministic)."""
        if overrides.get("seed") is not None:
            return int(overrides["seed"])
        seed = params.get("seed")
        return None if seed is None else int(seed)

    def request_text(self, item: Item, params: Mapping[str, Any]) -> str:
        """The normalized transcription when the source has one (numbers spelled out), else the text."""
        return str(params.get("normalized") or item.text)

    def measure(self, data: bytes, text: str) -> dict[str, Any] | None:
        """QA metrics of a 16-bit PCM WAV (see :mod:`tui_app.qa`); None for another format."""
        from ..qa import audio_metrics  # numpy: loaded only when a take is measured

        try:
            return audio_metrics(data, text)
        except ValueError:
            return None
