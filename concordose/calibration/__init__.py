"""Site calibration: the consortium's site registry, phantom analysis and the calibration gate."""
