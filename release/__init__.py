"""Orchestration above training and serving: the release recipe (`python -m release.recipe`)."""
