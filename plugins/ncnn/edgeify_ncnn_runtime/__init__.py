"""The device side of the edgeify ncnn plugin: the ``ncnn`` engine adapter (``edgeify_runtime.engines`` entry
point ``ncnn``). Imports neither ncnn nor numpy until a bundle is loaded."""
