"""locore.calibration."""
