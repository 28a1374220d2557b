"""rinuxfs: a small Linux-like kernel storage stack, simulated in Python, shown through FUSE."""

__version__ = "0.1.0"
