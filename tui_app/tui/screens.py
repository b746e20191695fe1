"""Modal screens: regenerate overrides, item details with take history, confirm, image preview."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..kinds import OverrideField
from ..views import ItemDetails


class RegenerateDialog(ModalScreen[dict[str, Any] | None]):
    """Overrides for a regeneration; Enter submits, Escape cancels. Returns the overrides or None."""

    DEFAULT_CSS = """
    RegenerateDialog { align: center middle; }
    RegenerateDialog > Vertical { width: 72; height: auto; border: thick $accent;
        background: $surface; padding: 1 2; }
    RegenerateDialog Input { margin-bottom: 1; }
    RegenerateDialog #error { color: $error; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, fields: Sequence[OverrideField], count: int):
        super().__init__()
        self.fields = tuple(fields)
        self.count = count

    def compose(self) -> ComposeResult:
        noun = "item" if self.count == 1 else "items"
        with Vertical():
            yield Label(f"Regenerate {self.count} {noun}: a new take each (Enter to queue, Esc to cancel)")
            for field in self.fields:
                yield Input(placeholder=field.placeholder, id=f"ov-{field.name}")
            yield Static("", id="error")
            with Horizontal():
                yield Button("Regenerate", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def overrides(self) -> dict[str, Any] | None:
        """Parsed overrides, or None (with a message shown) when a value is invalid."""
        out: dict[str, Any] = {}
        for field in self.fields:
            value = self.query_one(f"#ov-{field.name}", Input).value.strip()
            if not value:
                continue
            try:
                out[field.name] = field.parse(value)
            except ValueError:
                self.query_one("#error", Static).update(f"{field.name}: not a valid value: {value!r}")
                return None
        return out

    def _submit(self) -> None:
        overrides = self.overrides()
        if overrides is not None:
            self.dismiss(overrides)

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


class PreviewScreen(ModalScreen[None]):
    """An image in the terminal (textual-image; a text description when it is unavailable)."""

    DEFAULT_CSS = """
    PreviewScreen { align: center middle; }
    PreviewScreen > Vertical { width: 90%; height: 90%; border: thick $accent; background: $surface; }
    PreviewScreen #picture { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q,p,enter", "close", "Close")]

    def __init__(self, path: Path, caption: str):
        super().__init__()
        self.path = path
        self.caption = caption

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.caption}  ({self.path.name}; Esc closes)")
            try:
                from textual_image.widget import Image as ImageWidget

                yield ImageWidget(str(self.path), id="picture")
            except Exception as exc:  # noqa: BLE001 - no graphics support: describe the file instead
                from PIL import Image

                with Image.open(self.path) as img:
                    desc = f"{img.width}x{img.height} {img.mode} {img.format}"
                yield Static(
                    f"Cannot show images in this terminal ({exc}).\n{desc}\n{self.path}", id="picture"
                )

    def action_close(self) -> None:
        self.dismiss(None)
