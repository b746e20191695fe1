"""ItemTable: a line-API table that renders only the visible rows, fetched from SQLite.

Like toolong's ``LogLines``, it is a :class:`~textual.scroll_view.ScrollView`
whose virtual height is the row count; :meth:`render_line` asks a small page
cache for the row under each screen line, so first paint costs one COUNT and
one page query whether the collection has 100 or 100,000 items. Marks are a
set of item ids, so they survive refreshes, filters and re-sorting.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..kinds import Column
from ..store import Row
from ..views import RowSource

PAGE = 128

STATUS_STYLES = {
    "pending": Style(color="grey62"),
    "generating": Style(color="yellow", bold=True),
    "completed": Style(color="green"),
    "failed": Style(color="red", bold=True),
    "cancelled": Style(color="grey42", italic=True),
}


def header_text(columns: Sequence[Column]) -> str:
    """The column titles of a table with ``columns``, aligned like its rows."""
    return "  " + " ".join(c.title.ljust(c.width)[: c.width] for c in columns)


class ItemTable(ScrollView, can_focus=True):
    """Rows of one collection; see the module docstring."""

    DEFAULT_CSS = """
    ItemTable { height: 1fr; }
    ItemTable > .itemtable--cursor { background: $accent 40%; }
    ItemTable > .itemtable--marked { background: $primary 30%; }
    """
    COMPONENT_CLASSES = {"itemtable--cursor", "itemtable--marked"}

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("space", "toggle_mark", "Mark", id="mark"),
        Binding("shift+down", "extend(1)", "Extend down", show=False, id="extend_down"),
        Binding("shift+up", "extend(-1)", "Extend up", show=False, id="extend_up"),
        Binding("a", "mark_all", "Mark all", id="mark_all"),
        Binding("A", "invert_marks", "Invert", id="invert_marks"),
        Binding("escape", "clear_marks", "Clear marks", show=False, id="clear_marks"),
    ]

    class MarksChanged(Message):
        """The set of marked rows changed (``table`` is the sender)."""

        def __init__(self, table: ItemTable):
            super().__init__()
            self.table = table

    def __init__(self, source: RowSource, columns: Sequence[Column], *, id: str | None = None):
        super().__init__(id=id)
        self.source = source
        self.columns = tuple(columns)
        self.row_width = 2 + sum(c.width + 1 for c in self.columns)
        self.count = 0
        self.cursor = 0
        self.marks: set[int] = set()
        self._pages: dict[int, list[Row]] = {}
        self._anchor: int | None = None
        self._dense = False

    # ------------------------------------------------------------------ data

    def reload(self, *, recount: bool = True) -> None:
        """Drop cached rows (after engine events) and, with ``recount``, re-read the row count.

        Status changes do not change the count of an unfiltered view, so engine
        events reload with ``recount=False`` unless a filter is set.

        When the count and the cursor stay put, only the visible lines whose row
        changed are repainted (compared with the rows they were painted from):
        under a stream of engine events most reloads then repaint nothing, and a
        key press never waits behind a full repaint of the table.
        """
        old_pages, old_count, old_cursor = self._pages, self.count, self.cursor
        self._pages = {}
        if recount or self.source.filtered():
            self.count = self.source.count()
            self._dense = self.source.dense()
            self.virtual_size = Size(self.row_width, self.count)
        if self.cursor >= self.count:
            self.cursor = max(0, self.count - 1)
        if self.count != old_count or self.cursor != old_cursor or not old_pages or not self.is_on_screen:
            self.refresh()
            return
        top = self.scroll_offset.y
        for index in range(top, min(top + self.size.height, self.count)):
            rows = old_pages.get(index // PAGE)
            offset = index % PAGE
            old = rows[offset] if rows is not None and offset < len(rows) else None
            if old is None or self.row_at(index) != old:
                self.refresh_line(index)

    def row_at(self, index: int) -> Row | None:
        """The row at ``index`` in the filtered order (from the page cache)."""
        if not 0 <= index < self.count:
            return None
        page = index // PAGE
        rows = self._pages.get(page)
        if rows is None:
            if len(self._pages) > 16:
                self._pages.clear()
            rows = self._pages[page] = self.source.rows(page * PAGE, PAGE, dense=self._dense)
        offset = index - page * PAGE
        return rows[offset] if offset < len(rows) else None

    @property
    def cursor_row(self) -> Row | None:
        return self.row_at(self.cursor)

    def selected_ids(self) -> list[int]:
        """Marked ids, or the cursor row's id when nothing is marked."""
        if self.marks:
            return sorted(self.marks)
        row = self.cursor_row
        return [row.id] if row else []

    # ------------------------------------------------------------------ rendering

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        row = self.row_at(index)
        width = max(self.size.width, self.row_width)
        if row is None:
            return Strip.blank(width)
        base = Style()
        if index == self.cursor and self.has_focus:
            base = self.get_component_rich_style("itemtable--cursor")
        elif index == self.cursor:
            base = Style(reverse=True)
        elif row.id in self.marks:
            base = self.get_component_rich_style("itemtable--marked")
        marker = "● " if row.id in self.marks else "  "
        segments = [Segment(marker, base + Style(color="cyan", bold=True))]
        for column in self.columns:
            text = " ".join(str(column.value(row)).split())
            cell = (text[: column.width - 1] + "…") if len(text) > column.width else text.ljust(column.width)
            style = base + STATUS_STYLES[row.status] if column.title == "status" else base
            segments.append(Segment(cell + " ", style))
        strip = Strip(segments).extend_cell_length(width, base)
        return strip.crop(self.scroll_offset.x, self.scroll_offset.x + self.size.width)

    # ------------------------------------------------------------------ cursor and marks

    @property
    def visible_rows(self) -> int:
        """How many rows are on screen: the table's height less a horizontal scrollbar's (at least 1)."""
        return max(1, self.scrollable_content_region.height)

    def move_to(self, index: int) -> None:
        """Put the cursor on ``index`` (clamped) and scroll it into view: the cursor row is always one
        of the :attr:`visible_rows` (never under a scrollbar or past the bottom edge)."""
        old = self.cursor
        self.cursor = max(0, min(index, self.count - 1)) if self.count else 0
        top = round(self.scroll_target_y)
        rows = self.visible_rows
        if self.cursor < top:
            top = self.cursor
        elif self.cursor >= top + rows:
            top = self.cursor - rows + 1
        if top != self.scroll_target_y:
            self.scroll_to(y=top, animate=False, force=True, immediate=True)
        if old != self.cursor:
            # the two lines whose highlight changed (a scroll repaints the whole view by itself)
            self.refresh_line(old)
            self.refresh_line(self.cursor)

    def to_top(self) -> None:
        """Scroll to the first row and put the cursor on it (after a filter changed: its first match)."""
        self._anchor = None
        self.scroll_to(y=0, animate=False, force=True, immediate=True)
        self.move_to(0)
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        self._anchor = None
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * max(1, self.visible_rows - 1))

    def action_jump(self, where: int) -> None:
        self.move_to(self.count - 1 if where < 0 else 0)

    def _marks_changed(self) -> None:
        self.refresh()
        self.post_message(self.MarksChanged(self))

    def action_toggle_mark(self) -> None:
        row = self.cursor_row
        if row is None:
            return
        self.marks.symmetric_difference_update({row.id})
        self.move_to(self.cursor + 1)
        self._marks_changed()

    def action_extend(self, delta: int) -> None:
        """Extend the marks from where the range started to the new cursor row."""
        row = self.cursor_row
        if row is None:
            return
        if self._anchor is None:
            self._anchor = self.cursor
            self.marks.add(row.id)
        self.move_to(self.cursor + delta)
        lo, hi = sorted((self._anchor, self.cursor))
        for index in range(lo, hi + 1):
            r = self.row_at(index)
            if r:
                self.marks.add(r.id)
        self._marks_changed()

    def action_mark_all(self) -> None:
        self.marks.update(self.source.ids())
        self._marks_changed()

    def action_invert_marks(self) -> None:
        self.marks = set(self.source.ids()) - self.marks
        self._marks_changed()

    def action_clear_marks(self) -> None:
        self.marks.clear()
        self._anchor = None
        self._marks_changed()

    def on_resize(self) -> None:
        """Keep the cursor row on screen when the terminal (or the table) changes size: once the new
        size is laid out, the view scrolls to it (a smaller view would otherwise hide it)."""
        self.call_after_refresh(self._show_cursor)

    def _show_cursor(self) -> None:
        """Scroll the cursor row (where it is now) into view (not while the table is hidden: no size)."""
        if self.scrollable_content_region.height > 0:
            self.move_to(self.cursor)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
