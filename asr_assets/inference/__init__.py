"""Inference engines behind one protocol: local (torch), and later ONNX Runtime and Triton."""
