"""Small utilities below everything else (atomic file writes, dtype names)."""
