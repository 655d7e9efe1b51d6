"""Offline `prepare`: read, validate, filter, render with loss masks, pack, store, report."""
