"""Reading and running TorchServe model archives (`.mar`).

`mar.archive` unpacks archives, reads their members and runs an archive's own handler in a clean
interpreter; `mar.worker` is what runs inside that interpreter (and gives in-process tests a real
TorchServe `Context`). Imports nothing else of the project, so training, serving, evaluation,
benchmarks and tests can all use it.
"""
