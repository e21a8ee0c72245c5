"""TensorRT: the build plan (pure decisions per version), the build adapter, the runner, the calibration cache,
trtexec scripts, engine compatibility and CUDA graphs. `tensorrt` and `pycuda` are imported only inside the
functions that need them."""
