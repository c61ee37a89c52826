"""Versioned dataset snapshots, splits, diffs and export formats (see issue 5)."""
