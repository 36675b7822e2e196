"""Datasets: sources and loaders."""
