"""Using a trained model: predict on new images, export to ONNX."""
