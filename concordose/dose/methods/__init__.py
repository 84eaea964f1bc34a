"""One module per dose method."""
