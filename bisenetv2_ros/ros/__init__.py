"""The ROS 2 node: rclpy only in node.py, over ROS-free modules (pipeline, parameters, worker, stats, messages).

Exports SegmentationNode, LifecycleSegmentationNode, main (these three load rclpy), SegmentationPipeline,
image_to_array, labels_to_image.
"""

from .. import lazy_exports

_EXPORTS = {
    "SegmentationNode": "node",
    "LifecycleSegmentationNode": "node",
    "main": "node",
    "SegmentationPipeline": "pipeline",
    "image_to_array": "messages",
    "labels_to_image": "messages",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
