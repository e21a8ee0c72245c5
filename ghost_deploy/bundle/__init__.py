"""Deployment bundles: packing (`pack`), the application runtime (`Bundle`) and the DeepStream configuration."""
