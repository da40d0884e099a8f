"""Import every sub-command module so that it registers on the ``main`` group."""
# One line per command module; keep sorted.
from . import (
    cache,  # noqa: F401
    evaluate,  # noqa: F401
    export,  # noqa: F401
    finetune,  # noqa: F401
    import_onnx,  # noqa: F401
    rank,  # noqa: F401
)
