"""EMNIST data, shared preprocessing, model registry, training and evaluation.

Kept import-light on purpose: the TorchServe handler and the web app import submodules of this
package (`training.preprocessing`, `training.models`), and the web app must not pay for torch.
"""
