"""The compare screen: an item's takes side by side, to review them and pick the best.

What it shows depends on the collection's kind (asked of the kind object, never by name):

- a choosable kind (variants): the original photo and each of its variants' current takes, side
  by side, captioned with slot, temperature and seed; ``c`` chooses the highlighted variant;
- other image kinds (pages): every take of the item, captioned with take number, seed and review;
- audio kinds (dataset): every take listed with its QA figures and a waveform (the amplitude
  envelope in block characters, leading and trailing silence marked); ``p`` plays it.

``y`` / ``n`` accept or reject the highlighted take, ``v`` makes it current; each goes through
:mod:`tui_app.commands` as the table's keys do, then the screen reads the store again. It also
reads it once a second, so takes that a sweep is still making appear as they are done.

Pictures and clips are read and scaled in a thread, never on the event loop: a card shows its
caption at once, its picture or waveform when it is ready.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, HorizontalScroll, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import get_current_worker

from .. import commands
from ..kinds import get_kind
from ..kinds.columns import REVIEW_MARKS
from ..media import wav_info
from ..project import Project
from ..store import Item, RowFilter, Take
from ..waveform import Waveform, draw
from .screens import PictureWidget, load_picture

#: The longest side, pixels, a picture is scaled to before it is handed to the terminal renderer.
THUMBNAIL_PX = 768
#: The narrowest a picture card gets, cells; more cards than fit scroll sideways.
MIN_CARD_CELLS = 24
#: Rows of a waveform (each shows eight heights).
WAVE_ROWS = 2
#: How often the screen re-reads the store for new takes and reviews, seconds.
POLL_S = 1.0
#: A take's review state as its caption says it.
REVIEW_WORDS = {
    "accepted": f"{REVIEW_MARKS['accepted']} accepted",
    "rejected": f"{REVIEW_MARKS['rejected']} rejected",
    "unreviewed": "unreviewed",
}


class Workbench(Protocol):
    """What the compare screen needs of the app (the :class:`~tui_app.tui.app.TuiApp` provides it)."""

    project: Project

    def run_command(
        self, title: str, command: Callable[..., commands.Outcome], *args: Any, **kwargs: Any
    ) -> commands.Outcome | None:
        """Run a :mod:`tui_app.commands` function and show what it said; None when it could not apply."""
        ...

    def choose_variant(self, collection: str, item_id: int, key: str) -> bool:
        """Choose a variant (and have its final built), as the ``c`` key does; False when refused."""
        ...

    def play_file(self, collection: str, path: Path, key: str) -> None:
        """Play an audio take or preview a picture, as the ``p`` key does."""
        ...


@dataclass(frozen=True)
class Card:
    """One card of the compare screen: a take, or a variant's original photo.

    Attributes:
        item_id: the item the take belongs to (for the original photo: the item the screen opened on).
        key: that item's key.
        number: the take's number; None for the original photo or an item without a take.
        path: the file to show or play, absolute; None when there is none yet.
        caption: what the card says above the picture or waveform (one or more lines).
        current: the take is its item's current take.
        take: the take row, when the card is a take.
    """

    item_id: int
    key: str
    number: int | None
    path: Path | None
    caption: str
    current: bool = False
    take: Take | None = None

    @property
    def ident(self) -> str:
        """A stable DOM-safe id for the card's widget (what it shows, not where)."""
        return f"card-{self.item_id}-{self.number if self.number is not None else 'o'}"


def review_word(take: Take | None) -> str:
    """``✓ accepted``, ``✗ rejected`` or ``unreviewed`` (empty without a take)."""
    return REVIEW_WORDS.get(take.review, take.review) if take is not None else ""


def take_label(take: Take, current: bool) -> str:
    """``take N``, with ``▶ current`` for the item's current take."""
    return f"take {take.number}" + (" ▶ current" if current else "")


def variant_caption(item: Item, take: Take | None, current: bool = True) -> str:
    """Two lines for a variant: slot (index and name), temperature, seed; then take (current or
    not), review, choice (of the current take).

    The temperature and seed are the take's (an override included), else the slot's."""
    params = item.params
    made = take.params if take is not None else {}
    slot = params.get("preset") or params.get("variant", "")
    temperature = made.get("temperature", params.get("temperature"))
    seed = take.seed if take is not None and take.seed is not None else params.get("seed")
    first = [
        f"s{params.get('slot', '?')} {slot}",
        f"temp {float(temperature):.2f}" if temperature is not None else "temp -",
        f"seed {seed if seed is not None else 'random'}",
    ]
    if take is None:
        second = [item.status] + ([item.last_error] if item.status == "failed" and item.last_error else [])
    else:
        second = [take_label(take, current), review_word(take)]
        second += [{1: "chosen", -1: "set aside"}.get(item.chosen, "") if current else ""]
    return " · ".join(first) + "\n" + " · ".join(s for s in second if s)


def page_caption(take: Take, current: bool) -> str:
    """Two lines for an image take: number (current or not), seed; then review state and size."""
    first = [take_label(take, current), f"seed {take.seed}"]
    second = [review_word(take)]
    if take.width:
        second.append(f"{take.width}x{take.height}")
    if take.review_note:
        second.append(take.review_note)
    return " · ".join(first) + "\n" + " · ".join(second)


def speech_caption(take: Take, current: bool) -> str:
    """Two lines for a speech take: number, review, what it was made with (emotion, speed, seed);
    then its QA figures: duration (s), loudness (LUFS), WER, leading/trailing silence (s), flags."""
    qa = take.qa or {}
    first = [take_label(take, current), review_word(take)]
    for name in ("emotion", "speed"):
        if take.params.get(name) is not None:
            first.append(f"{name} {take.params[name]}")
    if take.seed is not None:
        first.append(f"seed {take.seed}")
    duration = qa.get("duration_s", take.duration_s)
    second = [f"{float(duration):.2f} s" if duration is not None else "- s"]
    if qa.get("loudness_lufs") is not None:
        second.append(f"{float(qa['loudness_lufs']):.1f} LUFS")
    second.append(f"WER {float(qa['wer']):.2f}" if qa.get("wer") is not None else "WER -")
    if qa.get("leading_silence_s") is not None:
        second.append(
            f"lead/trail silence {qa['leading_silence_s']:.2f}/{qa.get('trailing_silence_s', 0):.2f} s"
        )
    second.append(f"flags: {take.qa_flags}" if take.qa_flags else ("QA ok" if qa else "QA pending"))
    return " · ".join(first) + "\n" + " · ".join(second)


def waveform_text(wave: Waveform) -> Text:
    """A waveform's rows, then a marker row: ``─`` under leading and trailing silence."""
    text = Text()
    width = len(wave.rows[0]) if wave.rows else 0
    for row in wave.rows:
        text.append(row[: wave.lead], style="dim yellow")
        text.append(row[wave.lead : wave.trail], style="bold cyan")
        text.append(row[wave.trail :], style="dim yellow")
        text.append("\n")
    marks = "─" * wave.lead + " " * (wave.trail - wave.lead) + "─" * (width - wave.trail)
    text.append(marks, style="yellow")
    return text


def collect_cards(
    project: Project, collection: str, item_id: int, variants: Sequence[int] | None = None
) -> list[Card]:
    """The cards of the compare screen for item ``item_id``: for a choosable kind the original photo
    and every take of every variant of its photo (``variants``: their item ids, as
    :func:`variant_ids` finds them, looked up when None); otherwise every take of the item, oldest
    first. Reads the store (a few indexed queries); no file is read.
    """
    store = project.store
    item = store.get_item(item_id)
    if item is None:
        return []
    coll = project.config.collections[collection]
    kind = get_kind(coll.kind)
    if kind.choosable:
        cards = []
        photo = kind.source_file(coll, item)
        if photo is not None:
            cards.append(Card(item.id, item.key, None, photo, f"original · {item.text}\nthe photo"))
        ids = variant_ids(project, collection, item) if variants is None else variants
        for row in filter(None, map(store.get_item, ids)):
            takes = store.takes(row.id)  # every take: a sweep's are compared side by side too
            if not takes:
                cards.append(Card(row.id, row.key, None, None, variant_caption(row, None), False, None))
            for take in takes:
                current = take.id == row.current_take
                cards.append(
                    Card(
                        row.id,
                        row.key,
                        take.number,
                        project.take_path(take),
                        variant_caption(row, take, current),
                        current,
                        take,
                    )
                )
        return cards
    caption = speech_caption if kind.media == "audio" else page_caption
    return [
        Card(
            item.id,
            item.key,
            t.number,
            project.take_path(t),
            caption(t, t.id == item.current_take),
            t.id == item.current_take,
            t,
        )
        for t in store.takes(item.id)
    ]


def variant_ids(project: Project, collection: str, item: Item) -> list[int]:
    """Item ids of the variants of ``item``'s photo (itself included), in source order (one query
    over the items whose text holds the photo's file name)."""
    photo = item.params.get("photo", item.text)
    rows = project.store.rows(collection, RowFilter(text=item.text), 0, 1000)
    return [r.id for r in rows if r.params.get("photo", r.text) == photo]


def _load_waveforms(files: Sequence[tuple[str, Path]], width: int) -> list[tuple[str, Waveform | str]]:
    """The waveforms of WAV files on one time scale (the longest fills ``width`` columns, a take
    half as long half of them), or why one cannot be drawn: ``[(ident, waveform or message)]``.
    Runs in a thread."""
    clips: list[tuple[str, bytes | str, float]] = []
    for ident, path in files:
        try:
            wav = path.read_bytes()
            clips.append((ident, wav, wav_info(wav).duration_s))
        except (OSError, ValueError) as exc:
            clips.append((ident, f"no waveform: {exc}", 0.0))
    longest = max((seconds for _, _, seconds in clips), default=0.0)
    out: list[tuple[str, Waveform | str]] = []
    for ident, data, seconds in clips:
        if isinstance(data, str):
            out.append((ident, data))
            continue
        columns = max(1, round(width * seconds / longest)) if longest > 0 else width
        try:
            out.append((ident, draw(data, columns, WAVE_ROWS)))
        except ValueError as exc:
            out.append((ident, f"no waveform: {exc}"))
    return out


class CardView(Vertical):
    """One card: its caption, then a picture, a waveform or a text line (until it is loaded)."""

    def __init__(self, card: Card, *, media: str):
        super().__init__(id=card.ident, classes="card")
        self.card = card
        self.media = media

    def compose(self) -> ComposeResult:
        yield Static(self.card.caption, classes="caption", markup=False)
        if self.card.path is None:
            yield Static("no take yet", classes="body")
        elif self.media == "audio":
            yield Static("…", classes="body wave")
        else:
            with Container(classes="frame"):
                yield Static("loading…", classes="body")
            yield Static(self.card.path.name, classes="desc", markup=False)

    def update_card(self, card: Card) -> None:
        """Show ``card``'s caption (same file: the picture or waveform stays)."""
        self.card = card
        self.query_one(".caption", Static).update(card.caption)


class CompareScreen(ModalScreen[None]):
    """An item's takes side by side (see the module's docstring). Escape closes.

    Args:
        host: the app (commands, choosing, playing).
        collection: the collection's name.
        item_id: the item under the table's cursor.
    """

    DEFAULT_CSS = """
    CompareScreen { align: center middle; }
    CompareScreen > Vertical { width: 100%; height: 100%; border: thick $accent; background: $surface; }
    CompareScreen #compare-title { height: auto; padding: 0 1; text-style: bold; }
    CompareScreen #compare-keys { height: 1; padding: 0 1; color: $text-muted; }
    CompareScreen #cards { height: 1fr; }
    CompareScreen .card { border: round $panel-lighten-2; padding: 0 1; }
    CompareScreen HorizontalScroll .card { height: 100%; }
    CompareScreen VerticalScroll .card { height: auto; }
    CompareScreen .card.-highlight { border: heavy $accent; }
    CompareScreen .card.-current .caption { text-style: bold; }
    CompareScreen .caption { height: auto; }
    CompareScreen .frame { height: 1fr; align: center middle; }
    CompareScreen .frame > * { width: auto; height: auto; }
    CompareScreen .wave { height: auto; }
    CompareScreen .desc { height: 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    """
    BINDINGS = [
        Binding("escape,q", "close", "Close", id="compare-close"),
        Binding("left,up,k,h", "move(-1)", "Previous", show=False),
        Binding("right,down,j,l", "move(1)", "Next", show=False),
        Binding("y", "review('accepted')", "Accept", id="compare-accept"),
        Binding("n", "review('rejected')", "Reject", id="compare-reject"),
        Binding("v", "revert", "Make current", id="compare-revert"),
        Binding("c,enter", "choose", "Choose variant", id="compare-choose"),
        Binding("p", "play", "Play/preview", id="compare-play"),
    ]

    def __init__(self, host: Workbench, collection: str, item_id: int):
        super().__init__()
        self.host = host
        self.collection = collection
        self.item_id = item_id
        self.kind = get_kind(host.project.config.collections[collection].kind)
        self.cards: list[Card] = []
        self.variants: list[int] | None = None  # a variant's siblings, found once
        self.index = 0
        self._wave_width = 0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        item = self.host.project.store.get_item(self.item_id)
        what = f"{self.collection}/{item.key if item else self.item_id}"
        keys = "←/→ pick · y accept · n reject"
        if self.kind.choosable:
            what += " and the other variants of its photo"
            keys += " · c choose"
        else:
            keys += " · v make current"
        keys += " · p " + ("play" if self.kind.media == "audio" else "preview") + " · Esc close"
        with Vertical():
            yield Static(what, id="compare-title", markup=False)
            if self.kind.media == "audio":
                yield VerticalScroll(id="cards", can_focus=False)
            else:
                yield HorizontalScroll(id="cards", can_focus=False)
            yield Static(keys, id="compare-keys", markup=False)

    def on_mount(self) -> None:
        item = self.host.project.store.get_item(self.item_id)
        if self.kind.choosable and item is not None:
            self.variants = variant_ids(self.host.project, self.collection, item)
        self.cards = collect_cards(self.host.project, self.collection, self.item_id, self.variants)
        self.index = self._start_index()
        self._mount_cards()
        self.set_interval(POLL_S, self.refresh_cards)

    def _start_index(self) -> int:
        """The card the cursor starts on: the item the screen opened on (a variant), else the
        current take (the newest take when none is current)."""
        for n, card in enumerate(self.cards):
            if card.number is not None and card.item_id == self.item_id and card.current:
                return n
        return max(0, len(self.cards) - 1)

    def _mount_cards(self) -> None:
        """Replace every card widget with the cards of :attr:`cards`, then load their files."""
        box = self.query_one("#cards")
        box.remove_children()
        if not self.cards:
            box.mount(Static("no takes yet: regenerate it (r, or R for several takes)", classes="body"))
            return
        media = "audio" if self.kind.media == "audio" else "image"
        box.mount_all(CardView(card, media=media) for card in self.cards)
        self._size_cards()
        self._highlight()
        files = [(c.ident, c.path) for c in self.cards if c.path is not None]
        if media == "audio":
            self._wave_width = self._wave_cells()
            self.load_waveforms(files, self._wave_width)
        else:
            self.load_pictures(files)

    def _wave_cells(self) -> int:
        """Columns a waveform gets: the screen's width less borders, padding and a scrollbar."""
        return max(8, self.size.width - 10)

    def _size_cards(self) -> None:
        """Share the screen's width among the picture cards (at least MIN_CARD_CELLS each; more
        cards than fit scroll sideways)."""
        if self.kind.media == "audio" or not self.cards:
            return
        width = max(MIN_CARD_CELLS, (self.size.width - 2) // len(self.cards))
        for view in self.query(CardView):
            view.styles.width = width

    def on_resize(self) -> None:
        self._size_cards()
        if self.kind.media == "audio" and self.cards and self._wave_cells() != self._wave_width:
            self._wave_width = self._wave_cells()
            files = [(c.ident, c.path) for c in self.cards if c.path is not None]
            self.load_waveforms(files, self._wave_width)

    def _highlight(self) -> None:
        for n, view in enumerate(self.query(CardView)):
            view.set_class(n == self.index, "-highlight")
            view.set_class(view.card.current and view.card.number is not None, "-current")
        views = list(self.query(CardView))
        if 0 <= self.index < len(views):
            self.query_one("#cards").scroll_to_widget(views[self.index], animate=False)

    # ------------------------------------------------------------------ loading files (threads)

    @work(thread=True, exclusive=True, group="compare-pictures", exit_on_error=False)
    def load_pictures(self, files: Sequence[tuple[str, Path]]) -> None:
        """Read and scale each picture in this thread; each card shows it when it is ready."""
        worker = get_current_worker()
        for ident, path in files:
            image, desc = load_picture(path, THUMBNAIL_PX)
            if worker.is_cancelled:  # a newer load took over (the cards were rebuilt)
                return
            self.app.call_from_thread(self._show_picture, ident, image, desc)

    def _show_picture(self, ident: str, image: Any, desc: str) -> None:
        views = self.query(f"#{ident}")
        if not views:
            return  # the card went away meanwhile (a refresh)
        view = views.first()
        frame = view.query_one(".frame", Container)
        frame.remove_children()
        view.query_one(".desc", Static).update(desc)
        if image is None or PictureWidget is None:
            why = "cannot read the file" if image is None else "this terminal cannot show pictures"
            frame.mount(Static(f"({why})", classes="body", markup=False))
            return
        frame.mount(PictureWidget(image, classes="body picture"))

    @work(thread=True, exclusive=True, group="compare-waves", exit_on_error=False)
    def load_waveforms(self, files: Sequence[tuple[str, Path]], width: int) -> None:
        """Read the clips and draw their waveforms on one time scale, the longest ``width``
        columns wide, in this thread."""
        worker = get_current_worker()
        for ident, wave in _load_waveforms(files, width):
            if worker.is_cancelled:
                return
            self.app.call_from_thread(self._show_waveform, ident, wave)

    def _show_waveform(self, ident: str, wave: Waveform | str) -> None:
        views = self.query(f"#{ident}")
        if views:
            body = views.first().query_one(".wave", Static)
            body.update(waveform_text(wave) if isinstance(wave, Waveform) else Text(wave, style="red"))

    # ------------------------------------------------------------------ refresh

    def refresh_cards(self) -> None:
        """Read the store again: captions change in place; new or gone takes rebuild the cards."""
        cards = collect_cards(self.host.project, self.collection, self.item_id, self.variants)
        if cards == self.cards:
            return
        highlighted = self.highlighted()
        same_files = [(c.ident, c.path) for c in cards] == [(c.ident, c.path) for c in self.cards]
        self.cards = cards
        if highlighted is not None:
            self.index = next(
                (n for n, c in enumerate(cards) if c.ident == highlighted.ident),
                min(self.index, len(cards) - 1),
            )
        if same_files:
            for view, card in zip(self.query(CardView), cards, strict=False):
                view.update_card(card)
            self._highlight()
        else:
            self._mount_cards()

    def highlighted(self) -> Card | None:
        """The card under the cursor, or None when there is none."""
        return self.cards[self.index] if 0 <= self.index < len(self.cards) else None

    # ------------------------------------------------------------------ actions

    def action_close(self) -> None:
        self.dismiss(None)

    def action_move(self, step: int) -> None:
        """Move the cursor to the previous (``-1``) or next (``1``) card."""
        if self.cards:
            self.index = max(0, min(len(self.cards) - 1, self.index + step))
            self._highlight()

    def _take(self) -> Card | None:
        """The highlighted card when it is a take (else a warning, and None)."""
        card = self.highlighted()
        if card is None or card.number is None:
            what = "the original photo" if card is not None and card.path is not None else "this card"
            self.notify(f"{what} has no take to review", severity="warning")
            return None
        return card

    def action_review(self, state: str) -> None:
        """Accept or reject the highlighted take (``tui-app review ... --take N``): accepting a take
        that is not current makes it current."""
        card = self._take()
        if card is None:
            return
        title = "Accept" if state == "accepted" else "Reject"
        self.host.run_command(
            title, commands.review, self.host.project, self.collection, [card.key], state, take=card.number
        )
        self.refresh_cards()

    def action_revert(self) -> None:
        """Make the highlighted take its item's current take (``tui-app revert``)."""
        card = self._take()
        if card is None or card.number is None:
            return
        if card.current:
            self.notify(f"take {card.number} of {card.key} is already current", severity="warning")
            return
        self.host.run_command(
            "Revert", commands.revert, self.host.project, self.collection, card.key, card.number
        )
        self.refresh_cards()

    def action_choose(self) -> None:
        """Choose the highlighted variant take, as ``c`` on the table does (it is then finalized);
        a take that is not its variant's current one is made current first (``tui-app revert``)."""
        if not self.kind.choosable:
            self.notify(f"{self.collection}: choose works on variants (y accepts a take)", severity="warning")
            return
        card = self._take()
        if card is None or card.number is None:
            return
        if not card.current and not self.host.run_command(
            "Revert", commands.revert, self.host.project, self.collection, card.key, card.number
        ):
            return  # the take could not be made current: nothing is chosen
        self.host.choose_variant(self.collection, card.item_id, card.key)
        self.refresh_cards()

    def action_play(self) -> None:
        """Play the highlighted clip, or preview the highlighted picture at full size."""
        card = self.highlighted()
        if card is None or card.path is None:
            self.notify("nothing to play: no take yet", severity="warning")
            return
        self.host.play_file(
            self.collection, card.path, f"{card.key} take {card.number}" if card.number else card.key
        )


__all__ = [
    "Card",
    "CardView",
    "CompareScreen",
    "Workbench",
    "collect_cards",
    "variant_ids",
    "page_caption",
    "review_word",
    "speech_caption",
    "variant_caption",
    "waveform_text",
]
