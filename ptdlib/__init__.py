"""ptdlib: measure and choose the response canvas of masked diffusion language models."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout ptdlib runs from (an editable install): notebooks/, data/, figures/, configs/ live here.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The project's data folder: the embedded models, the task samples and the caches.
DATA_DIR = REPO_ROOT / "data"
