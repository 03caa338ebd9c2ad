"""Evaluation sources and helpers: canvas-like renderings of EMNIST test images, Hershey-font pen
drawings at canvas size (evaluation only: never trained on), and reading drawings through a
released archive's own code."""
