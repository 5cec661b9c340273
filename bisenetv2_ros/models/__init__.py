"""The networks: BiSeNetV2 (the paper's blocks, one file), BiSeNetV1, and the table that builds either by name.

Exports BiSeNetV2, BiSeNetV2Config, BiSeNetV1, BiSeNetV1Config, build_model, ARCHITECTURES.
"""

from .. import lazy_exports

_EXPORTS = {
    "BiSeNetV2": "bisenetv2",
    "BiSeNetV2Config": "bisenetv2",
    "BiSeNetV1": "bisenetv1",
    "BiSeNetV1Config": "bisenetv1",
    "build_model": "architectures",
    "ARCHITECTURES": "architectures",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
