"""The GhostNet family (V1, V2, V3) in PyTorch, what is known about a model, and loading checkpoints."""
