"""Assisted landmark annotation in the browser (`python -m bmdjax.annotate`).

store: the annotation CSV (atomic, locked writes); queue: the studies, their
pre-filled points, review order, images, checks and ROI boxes; sources: a
session from a landmarks CSV or a detector; interchange: COCO keypoints;
server: the local web application; static/: the page (no external resources).
"""
