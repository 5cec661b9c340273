"""BiSeNetV2 real-time semantic segmentation for ROS 2.

Kept deliberately empty of imports: in a colcon install this directory is shared with the
message package rosidl generates, and the core must import without ROS, torch-free callers
(e.g. ``bisenetv2_ros.messages``) must not pay for importing torch.

One setting is made here, before anything can load torch's OpenMP runtime (it reads it once, at
load): OpenMP threads that sleep when they wait (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning.
A robot's CPU is shared; with the default spinning, torch's two threads on a 2-core EPYC ran 3-5x
slower beside one busy process (issue 19) and 6-19x slower than passive ones on a busier machine
(README, "Shared CPU: thread settings"). A value set by the user wins.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
