"""The code that runs inside a TorchServe worker: `emnist_handler.py`, a thin adapter over the
core (`emnist/`). Inside an archive the handler sits at the root next to the `emnist/` package."""
