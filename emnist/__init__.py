"""The core: what training, the TorchServe handler and the web app share.

Preprocessing (`emnist.preprocessing`), the canvas geometry (`emnist.canvas`), the models and their
registry (`emnist.models`), self-describing checkpoints (`emnist.checkpoint`), label maps
(`emnist.labels`), request parsing and JSON answers (`emnist.requests`, `emnist.responses`) and
batch inference helpers (`emnist.inference`).

This package imports nothing else of the project (`make lint` checks it) and, with the handler
module, is the only project code inside a model archive. Kept import-light: the web app imports
`emnist.requests` and `emnist.responses` without paying for torch.
"""
