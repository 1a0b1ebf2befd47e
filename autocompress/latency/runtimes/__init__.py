"""Runtimes other than PyTorch eager: the ONNX model a candidate ships as, and timing it in ONNX Runtime."""
