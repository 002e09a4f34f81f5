"""An example plugin service: counts reported incidents per community, grid cell and category."""
