"""Annotations in COCO form: reading COCO files and importing labeled folders."""
