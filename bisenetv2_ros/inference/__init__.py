"""Inference: the Segmenter (frames in, labels out) over one fused graph on torch, ONNX Runtime, OpenVINO, TensorRT.

Exports Segmenter, create_backend, BackendError; `auto` measures the candidates (measured_auto).
"""

from .. import lazy_exports

_EXPORTS = {
    "Segmenter": "segmenter",
    "create_backend": "backends",
    "BackendError": "backends",
    "BACKENDS": "backends",
    "PRECISIONS": "backends",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
