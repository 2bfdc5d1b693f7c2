"""hspace: semantic image editing in the h-space of frozen diffusion models."""

__version__ = "0.1.0"
