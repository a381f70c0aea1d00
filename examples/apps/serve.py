"""edgeify example app: the HTTP inference service, ``python -m edgeify_runtime.serve``, as a script.

The service lives in the runtime package (``edgeify_runtime.serve``; install it with
``pip install 'edgeify-runtime[serve]'``), so that ``edgeify deploy --app serve`` runs it from the runtime zip on
a device. This launcher keeps the example's command lines working::

    python examples/apps/serve.py --bundle build/digits-x86 --port 8080
    python -m edgeify_runtime.serve --bundle build/digits-x86 --port 8080     # the same

``python -m edgeify_runtime.serve --help`` lists the options; ``examples/apps/README.md`` describes the API.
"""

from __future__ import annotations

import sys

from edgeify_runtime.serve.cli import main
from edgeify_runtime.serve.codec import HTTPError
from edgeify_runtime.serve.service import Service

__all__ = ["HTTPError", "Service", "main"]

if __name__ == "__main__":
    sys.exit(main())
