"""Build steps. Each module holds one step kind; ``edgeify.pipeline.BUILTIN_STEPS`` maps kinds to classes."""
