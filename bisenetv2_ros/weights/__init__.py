"""Weights: the checkpoint format, importers of published checkpoints, the named weights and their download.

Exports Checkpoint, CheckpointInfo, load_checkpoint, save_checkpoint, open_weights, load_model, KNOWN_WEIGHTS,
import_checkpoint, download_weights.
"""

from .. import lazy_exports

_EXPORTS = {
    "Checkpoint": "checkpoint",
    "CheckpointInfo": "checkpoint",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "open_weights": "known_weights",
    "load_model": "known_weights",
    "KNOWN_WEIGHTS": "known_weights",
    "DEFAULT_WEIGHTS": "known_weights",
    "import_checkpoint": "importers",
    "download_weights": "download",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
