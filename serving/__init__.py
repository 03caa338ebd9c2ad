"""Serving, outside the TorchServe worker: building archives and their model cards, one
TorchServe's configuration, start and stop, the management API client, process control and the
`make serve / stop / models / register / set-default / demo` commands.

The code that runs inside a worker is `handlers/emnist_handler.py` over the core (`emnist/`).
"""
