"""Pure Pillow renderers: draft picture-book pages and photo variants (no I/O, no state)."""
