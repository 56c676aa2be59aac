"""Training, evaluation and int8 calibration of the U-Nets on data specs."""
