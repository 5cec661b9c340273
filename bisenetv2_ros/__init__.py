"""BiSeNetV2 real-time semantic segmentation for ROS 2.

Kept deliberately empty of imports: in a colcon install this directory is shared with the
message package rosidl generates, and the core must import without ROS, torch-free callers
(e.g. ``bisenetv2_ros.messages``) must not pay for importing torch.
"""

__version__ = "0.1.0"
