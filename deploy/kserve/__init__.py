"""KServe: the storage layout of its TorchServe runtime (assemble.py) and its manifests."""
