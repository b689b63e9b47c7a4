"""Export prunedge models to ONNX and TFLite, verify each file in its runtime, write the manifest.

`python -m export run|verify|table` (see export/__main__.py); the table of formats is export/formats.py.
"""
