"""Dataset specifications (YAML), installed as ``iterseg.data_specs``; see iterseg/training/data.py."""
