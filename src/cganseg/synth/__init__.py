"""Synthetic annotated data: dense and colony masks, and image/mask pairs from a generator."""
