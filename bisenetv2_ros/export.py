"""Deprecated alias of ``bisenetv2_ros.cli.export`` (moved in 0.2, removed in 0.3).

``python -m bisenetv2_ros.export`` still runs the older export command, which prints its own deprecation line.
"""

if __name__ == "__main__":
    import sys

    from .cli.export import main

    sys.exit(main())
else:
    from . import deprecated_alias

    __getattr__ = deprecated_alias(__name__, "bisenetv2_ros.cli.export")
