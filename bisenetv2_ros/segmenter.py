"""Deprecated alias of ``bisenetv2_ros.inference.segmenter`` (moved in 0.2, removed in 0.3)."""

from . import deprecated_alias

__getattr__ = deprecated_alias(__name__, "bisenetv2_ros.inference.segmenter")
