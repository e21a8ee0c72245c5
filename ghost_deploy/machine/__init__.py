"""What this machine has: GPUs, Jetson, TensorRT version (probe), clock locks, and `ghost-deploy doctor`."""
