"""BiSeNetV2 real-time semantic segmentation for ROS 2.

Layers, each importing only those below it (docs/architecture.md, held by test/test_layers.py): the
shared vocabulary in this folder (conventions, classes, class_tables, fileio, image_headers,
output_safety) -> models/ -> weights/ -> inference/ -> ros/ and cli/ -> benchmarks/.

Kept deliberately empty of imports: in a colcon install this directory is shared with the
message package rosidl generates, and the core must import without ROS, torch-free callers
(e.g. ``bisenetv2_ros.ros.messages``) must not pay for importing torch.

One setting is made here, before anything can load torch's OpenMP runtime (it reads it once, at
load): OpenMP threads that sleep when they wait (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning.
A robot's CPU is shared; with the default spinning, torch's two threads on a 2-core EPYC ran 3-5x
slower beside one busy process (issue 19) and 6-19x slower than passive ones on a busier machine
(docs/backends-and-speed.md, "Shared CPU: thread settings"). A value set by the user wins.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"


def lazy_exports(package: str, exports: dict[str, str]):
    """A subpackage's module ``__getattr__``: ``exports`` maps a public name to the module defining it.

    The name's module is imported on first use, so importing a subpackage (``bisenetv2_ros.ros`` for
    its ROS-free message converters, say) never loads torch or rclpy for names it does not touch.
    """
    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib
        return getattr(importlib.import_module(f"{package}.{module}"), name)
    return __getattr__


def deprecated_alias(old: str, new: str, moved: dict[str, str] | None = None):
    """The ``__getattr__`` of a module left at its 0.1 path: one FutureWarning, then every name forwards.

    FutureWarning rather than DeprecationWarning so that a user's script or ``python -m`` prints the
    line (Python hides DeprecationWarning outside ``__main__``). ``moved``: names that had already moved
    elsewhere before 0.2, mapped to their module. Removed in 0.3.
    """
    import importlib
    import sys
    import warnings

    warnings.warn(f"{old} is deprecated and will be removed in 0.3: import {new} instead", FutureWarning,
                  stacklevel=3)
    target = importlib.import_module(new)

    def home(name: str):
        return importlib.import_module((moved or {})[name]) if name in (moved or {}) else target

    def __getattr__(name: str):
        return getattr(home(name), name)

    # The alias module forwards writes and deletes too (so `mock.patch("bisenetv2_ros.segmenter.X")`
    # patches what the package runs), lists the target's names in dir() and exports them to `import *`.
    module = sys.modules[old]
    module.__dict__.update(_alias_home=home, __all__=[
        name for name in dict.fromkeys([*getattr(target, "__all__", dir(target)), *(moved or {})])
        if not name.startswith("_") and not isinstance(getattr(home(name), name, None), type(sys))])
    module.__class__ = _AliasModule
    return __getattr__


class _AliasModule(type(_os)):
    """A deprecated alias module: attribute reads, writes and deletes go to the module that now holds the name."""

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("__") or name in self.__dict__:
            super().__setattr__(name, value)
        else:
            setattr(self.__dict__["_alias_home"](name), name, value)

    def __delattr__(self, name: str) -> None:
        if name.startswith("__") or name in self.__dict__:
            super().__delattr__(name)
        else:
            delattr(self.__dict__["_alias_home"](name), name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__["__all__"]))
