"""Build matrices: many models x targets x precisions, built on a local process pool or a Ray cluster."""
