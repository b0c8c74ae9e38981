"""Assisted landmark annotation in the browser (`python -m bmdjax.annotate`).

store: the annotation CSV (atomic, locked writes); queue: the studies, their
pre-filled points and review order; server: the local web application;
static/: the page (no external resources).
"""
