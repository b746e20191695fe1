"""Modal screens: regenerate overrides, item details with take history, confirm, image preview."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..kinds import OverrideField
from ..views import ItemDetails

# textual-image asks the terminal what it can show (sixel, kitty graphics, cell size) when it is
# imported, which it can no longer do once Textual reads the terminal: import it with this module,
# before the app starts. None where it cannot load: pictures are then described in text.
PictureWidget: Any  # the widget class, or None
try:
    from textual_image.widget import Image as _Picture

    PictureWidget = _Picture
except Exception:  # noqa: BLE001 - any failure to probe the terminal means: no pictures
    PictureWidget = None


@dataclass(frozen=True)
class Regeneration:
    """What the regenerate dialog asks for (the arguments of :func:`tui_app.commands.regenerate`).

    Attributes:
        overrides: the parsed values of the override fields filled in, by field name.
        takes: new takes per item, each with a seed of its own (the command checks it).
        sweep: ``NAME=V1,V2,...``: one take per value of one override; None for no sweep.
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    takes: int = 1
    sweep: str | None = None


class RegenerateDialog(ModalScreen[Regeneration | None]):
    """Overrides, takes and a sweep for a regeneration; Enter submits, Escape cancels.

    With ``apply``, Enter calls ``apply(regeneration)``, which queues it and returns None, or returns
    why it cannot (one line, e.g. a :class:`~tui_app.commands.CommandError`'s): the dialog then stays
    open and shows it. Returns the regeneration that was applied, or None when cancelled.

    Args:
        fields: the kind's override fields, one input each.
        count: how many items are regenerated (for the title).
        apply: queues the regeneration; see above.
    """

    DEFAULT_CSS = """
    RegenerateDialog { align: center middle; }
    RegenerateDialog > Vertical { width: 72; height: auto; max-height: 100%; border: thick $accent;
        background: $surface; padding: 0 2; }
    RegenerateDialog Label { margin-bottom: 1; }
    RegenerateDialog #error { color: $error; height: auto; }
    RegenerateDialog Horizontal { height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        fields: Sequence[OverrideField],
        count: int,
        apply: Callable[[Regeneration], str | None] | None = None,
    ):
        super().__init__()
        self.fields = tuple(fields)
        self.count = count
        self.apply = apply

    def compose(self) -> ComposeResult:
        noun = "item" if self.count == 1 else "items"
        names = ", ".join(f.name for f in self.fields)
        with Vertical():
            yield Label(f"Regenerate {self.count} {noun}: new takes (Enter to queue, Esc to cancel)")
            for spec in self.fields:
                yield Input(placeholder=spec.placeholder, id=f"ov-{spec.name}")
            seeded = any(spec.name == "seed" for spec in self.fields)
            each = "each with a seed of its own" if seeded else "no seeds here: sweep a parameter"
            yield Input(placeholder=f"takes per item (empty = 1; {each})", id="takes", type="integer")
            yield Input(placeholder=f"sweep NAME=V1,V2,... over {names} (empty = none)", id="sweep")
            yield Static("", id="error")
            with Horizontal():
                yield Button("Regenerate", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def _fail(self, message: str) -> None:
        self.query_one("#error", Static).update(message)

    def overrides(self) -> dict[str, Any] | None:
        """Parsed overrides, or None (with a message shown) when a value is invalid."""
        out: dict[str, Any] = {}
        for spec in self.fields:
            value = self.query_one(f"#ov-{spec.name}", Input).value.strip()
            if not value:
                continue
            try:
                out[spec.name] = spec.parse(value)
            except ValueError:
                self._fail(f"{spec.name}: not a valid value: {value!r}")
                return None
        return out

    def regeneration(self) -> Regeneration | None:
        """What the fields ask for, or None (with a message shown) when a field cannot be read; the
        takes and the sweep are checked by the command itself (:func:`tui_app.commands.sweep_plan`)."""
        overrides = self.overrides()
        if overrides is None:
            return None
        text = self.query_one("#takes", Input).value.strip()
        try:
            takes = int(text) if text else 1
        except ValueError:
            self._fail(f"takes: not a whole number: {text!r}")
            return None
        sweep = self.query_one("#sweep", Input).value.strip() or None
        return Regeneration(overrides, takes, sweep)

    def _submit(self) -> None:
        regeneration = self.regeneration()
        if regeneration is None:
            return
        problem = self.apply(regeneration) if self.apply is not None else None
        if problem:
            self._fail(problem)
            return
        self.dismiss(regeneration)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y``/Enter confirms, ``n``/Escape declines."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 64; height: auto; border: thick $warning;
        background: $surface; padding: 1 2; }
    ConfirmScreen Label { width: 100%; }
    """
    BINDINGS = [Binding("y,enter", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Label("[b]y[/b] yes   [b]n[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class DetailScreen(ModalScreen[int | None]):
    """Full text, every take with its parameters, the last error. ``v`` reverts to the highlighted take.

    The take list has the focus when the screen opens, its cursor on the current take: ``up``/``down``
    pick another, ``v`` makes it current. ``v`` on the current take changes nothing (it says so).
    Returns the take number to revert to, or None.
    """

    DEFAULT_CSS = """
    DetailScreen { align: center middle; }
    DetailScreen > Vertical { width: 90%; height: 90%; border: thick $accent;
        background: $surface; padding: 0 1; }
    DetailScreen VerticalScroll { height: auto; max-height: 60%; }
    DetailScreen #takes { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q,enter", "close", "Close"), Binding("v", "revert", "Revert to take")]

    def __init__(self, details: ItemDetails, collection: str):
        super().__init__()
        self.details = details
        self.collection = collection

    def compose(self) -> ComposeResult:
        item = self.details.item
        takes = self.details.takes
        current = item.current_take
        lines = [
            f"[b]{self.collection}/{item.key}[/b]   status [b]{item.status}[/b]   attempts {item.attempts}"
            + ("   [yellow]stale[/yellow]" if item.stale else ""),
            "",
            item.text,
        ]
        if item.params:
            lines += ["", "params: " + json.dumps(item.params, ensure_ascii=False)]
        if item.last_error:
            lines += ["", f"[red]last error: {item.last_error}[/red]"]
        lines += ["", f"{len(takes)} take(s); pick one with up/down and press [b]v[/b] to make it current:"]
        with Vertical():
            with VerticalScroll():
                yield Static("\n".join(lines), markup=True)
            options = []
            for take in reversed(takes):
                mark = "▶ current" if take.id == current else ""
                facts = [f"take {take.number}", mark, f"{take.bytes / 1024:.0f} KB"]
                if take.duration_s:
                    facts.append(f"{take.duration_s:.2f} s audio")
                if take.width:
                    facts.append(f"{take.width}x{take.height}")
                if take.seed is not None:
                    facts.append(f"seed {take.seed}")
                facts.append(f"{take.provider}/{take.model or '-'}")
                facts.append(f"made in {take.elapsed_s:.2f} s")
                if take.qa_flags:
                    facts.append(f"QA: {take.qa_flags}")
                params = {k: v for k, v in take.params.items() if k not in ("operations",)}
                options.append(
                    Option(
                        "  ".join(f for f in facts if f) + "\n    " + json.dumps(params)[:200],
                        id=str(take.number),
                    )
                )
            yield OptionList(*options, id="takes")

    def current_number(self) -> int | None:
        """The number of the item's current take (None when it has none)."""
        current = self.details.item.current_take
        return next((t.number for t in self.details.takes if t.id == current), None)

    def on_mount(self) -> None:
        """Focus the take list, its cursor on the current take (the newest when there is none)."""
        takes = self.query_one("#takes", OptionList)
        takes.focus()
        if takes.option_count:
            number = self.current_number()
            index = takes.get_option_index(str(number)) if number is not None else 0
            takes.highlighted = index
            takes.scroll_to_highlight()

    def action_close(self) -> None:
        self.dismiss(None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter on the take list closes the screen, as Enter does anywhere on it (``v`` reverts)."""
        event.stop()
        self.dismiss(None)

    def action_revert(self) -> None:
        """Make the take under the cursor current (closing the screen); nothing when it already is."""
        takes = self.query_one("#takes", OptionList)
        if takes.highlighted is None:
            return
        option = takes.get_option_at_index(takes.highlighted)
        if option.id is None:
            return
        number = int(option.id)
        if number == self.current_number():
            self.notify(f"take {number} is already current: pick another with up/down", severity="warning")
            return
        self.dismiss(number)


def load_picture(path: Path, max_px: int) -> tuple[Any, str]:
    """Read a picture, scaled down to at most ``max_px`` pixels on its longer side (a PIL image in
    RGB), and a line describing the file (name, size in pixels, mode); the image is None when the
    file cannot be read, and the line then says why. Blocking: call it in a thread."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            desc = f"{path.name} · {img.width}x{img.height} {img.mode}"
            img.thumbnail((max_px, max_px))
            return img.convert("RGB"), desc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return None, f"{path.name}: cannot read ({exc})"


class PreviewScreen(ModalScreen[None]):
    """An image in the terminal (textual-image; a text description when it is unavailable).

    The file is read and scaled in a thread: the screen opens at once and shows it when it is ready.
    """

    DEFAULT_CSS = """
    PreviewScreen { align: center middle; }
    PreviewScreen > Vertical { width: 90%; height: 90%; border: thick $accent; background: $surface; }
    PreviewScreen #frame { height: 1fr; align: center middle; }
    PreviewScreen #picture { width: auto; height: auto; }
    """
    BINDINGS = [Binding("escape,q,p,enter", "close", "Close")]
    #: The longest side, pixels, of the picture handed to the terminal renderer.
    MAX_PX = 2048

    def __init__(self, path: Path, caption: str):
        super().__init__()
        self.path = path
        self.caption = caption

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.caption}  ({self.path.name}; Esc closes)", markup=False)
            with Container(id="frame"):
                yield Static("loading…", id="picture")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        """Read and scale the picture in this thread, then show it."""
        image, desc = load_picture(self.path, self.MAX_PX)
        self.app.call_from_thread(self._show, image, desc)

    def _show(self, image: Any, desc: str) -> None:
        frame = self.query_one("#frame", Container)
        frame.remove_children()
        if image is not None and PictureWidget is not None:
            frame.mount(PictureWidget(image, id="picture"))
        else:
            why = "" if image is None else "\nThis terminal cannot show pictures."
            frame.mount(Static(f"{desc}{why}\n{self.path}", id="picture", markup=False))

    def action_close(self) -> None:
        self.dismiss(None)
