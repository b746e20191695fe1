"""tui_app: a terminal workbench for generating TTS datasets, story pages and photo variants in bulk.

Headless modules (config, store, engine, providers, sources, batch) never import
Textual; the TUI lives in :mod:`tui_app.tui`.
"""

__version__ = "0.1.0"
