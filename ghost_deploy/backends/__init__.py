"""Where models run: one Runner interface (`base`), PyTorch, ONNX (export, simplify, divergence), ONNX Runtime
and TensorRT."""
