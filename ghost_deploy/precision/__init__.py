"""Reduced precision on the CPU: streaming calibration, Q/DQ insertion for TensorRT and ONNX Runtime, FP16
conversion, and the INT8 sensitivity ranking."""
