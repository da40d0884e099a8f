"""Import every sub-command module so that it registers on the ``main`` group."""
# One line per command module; keep sorted.
from . import cache  # noqa: F401
from . import evaluate  # noqa: F401
from . import export  # noqa: F401
from . import finetune  # noqa: F401
from . import import_onnx  # noqa: F401
from . import rank  # noqa: F401
