"""Inference engines behind one protocol: local torch, local ONNX Runtime, Triton, and the
fallback engine that moves work from Triton to a local engine when its breaker opens."""
