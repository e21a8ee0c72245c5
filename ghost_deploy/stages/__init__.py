"""The jobs, stage by stage: the source (checkpoint or ONNX -> the loaded model and its FP32 ONNX), the ONNX and
engine exports, standalone verification and the sensitivity ranking."""
