"""Build steps. Each module holds one step kind, registered in the entry-point group ``edgeify.steps``
(pyproject.toml); ``registry`` finds them, ``base`` is the contract, ``facts`` and ``search`` what a step declares."""
