"""Voice-dialogue pipeline server: speech in, spoken answer out."""

__version__ = "0.1.0"
