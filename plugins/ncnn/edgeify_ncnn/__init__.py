"""The host side of the edgeify ncnn plugin: the ``ncnn-convert`` build step (``edgeify.steps`` entry point) and
the target fragment that offers ``--engine ncnn`` on the rpi, android and x86 targets."""
