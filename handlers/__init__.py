"""TorchServe serving: the handler, request parsing, archive building and the server control CLI.

Kept import-light: `handlers.parsing` and `handlers.responses` are torch-free so the web app can
reuse them; only `handlers.emnist_handler` imports torch and TorchServe.
"""
