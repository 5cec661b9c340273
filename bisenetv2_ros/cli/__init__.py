"""The `bisenetv2` command line: segment images, videos and bags, get/inspect/export weights, tune.

Exports main (the console script); each subcommand lives in the module named after its job.
"""

from .. import lazy_exports

_EXPORTS = {
    "main": "commands",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
