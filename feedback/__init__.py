"""People's corrections: the store the web app writes (`feedback.store`) and training reads
(`python -m training.feedback`). Imports nothing else of the project."""
