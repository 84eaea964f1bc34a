"""One module per kinetics method."""
