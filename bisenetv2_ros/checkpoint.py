"""Deprecated alias of ``bisenetv2_ros.weights.checkpoint`` (moved in 0.2, removed in 0.3)."""

from . import deprecated_alias

# names that had left this module for known_weights / importers before 0.2
_MOVED = {
    **dict.fromkeys(("load_model", "open_weights", "resolve_weights", "cache_dir", "KNOWN_WEIGHTS", "KnownWeights",
                     "DEFAULT_WEIGHTS", "PACKAGE_WEIGHTS_DIR"), "bisenetv2_ros.weights.known_weights"),
    **dict.fromkeys(("import_checkpoint", "import_state_dict", "FAMILIES"), "bisenetv2_ros.weights.importers"),
}
__getattr__ = deprecated_alias(__name__, "bisenetv2_ros.weights.checkpoint", _MOVED)
