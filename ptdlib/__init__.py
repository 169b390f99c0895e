"""ptdlib: measure and choose the response canvas of masked diffusion language models."""

__version__ = "0.1.0"
