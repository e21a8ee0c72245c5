"""Latency like trtexec: the timing loop and statistics, per-layer times, TensorRT event timing, the report,
and `bench`."""
