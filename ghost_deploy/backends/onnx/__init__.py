"""ONNX graphs: PyTorch -> ONNX export, simplification, and locating the first node that diverges."""
