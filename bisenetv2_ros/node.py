"""Deprecated alias of ``bisenetv2_ros.ros.node`` (moved in 0.2, removed in 0.3).

``python -m bisenetv2_ros.node`` still starts the node, after one line saying where it moved.
"""

if __name__ == "__main__":
    import runpy
    import sys

    print("python -m bisenetv2_ros.node is deprecated and will be removed in 0.3: use "
          "`ros2 run bisenetv2_ros segmentation_node` or `python -m bisenetv2_ros.ros.node`", file=sys.stderr)
    # as `python -m bisenetv2_ros.ros.node` runs it: --help and a missing ROS answered in one line
    runpy.run_module("bisenetv2_ros.ros.node", run_name="__main__", alter_sys=True)
else:
    from . import deprecated_alias

    __getattr__ = deprecated_alias(__name__, "bisenetv2_ros.ros.node")
