"""Input data: image preprocessing, and the sources (folders, .npy/.npz, seeded random) that feed every runner."""
