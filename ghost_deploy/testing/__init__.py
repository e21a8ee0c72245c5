"""Test doubles for the hardware this project's development machines lack (see `ghost_deploy.testing.trtsim`)."""
