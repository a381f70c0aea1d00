"""Stubs generated from the Open Inference Protocol's ``grpc_predict_v2.proto`` (``generate.py`` made them with
grpcio-tools 1.85.1); they need ``grpcio`` and ``protobuf`` >= 7.35 (the ``grpc`` extra), imported only when the
service is started with ``--grpc-port``."""

from __future__ import annotations
