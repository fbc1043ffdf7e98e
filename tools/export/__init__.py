"""Model export: a model directory to ONNX, checked against torch, into a Triton model repository.

`python -m tools.export --model-dir DIR --out REPO_DIR` (see `cli.py`);
`python -m tools.export.accuracy` measures what int8 quantization costs (see `accuracy.py`).
"""
