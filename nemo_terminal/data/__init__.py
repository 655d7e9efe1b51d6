"""Prepared datasets: preparing them, storing them on disk, and feeding them to the trainer."""
