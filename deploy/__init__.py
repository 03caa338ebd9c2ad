"""Deployment recipes beyond `make serve`: KServe (deploy/kserve/README.md)."""
