"""Verify exported artifacts: element-wise parity (compare) and manifest walks (artifacts)."""
