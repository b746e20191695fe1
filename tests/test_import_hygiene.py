"""The headless path must never import Textual (checked in a clean subprocess)."""

from __future__ import annotations

import subprocess
import sys

from conftest import write_project


def test_batch_and_status_do_not_import_textual(tmp_path):
    write_project(tmp_path, entries=3, pages=1, photos=1)
    code = (
        "import sys\n"
        "from tui_app.cli import main\n"
        "assert main(['--batch', '--json']) == 0\n"
        "assert main(['status', '--json']) == 0\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print('TEXTUAL', bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "TEXTUAL []" in proc.stdout
