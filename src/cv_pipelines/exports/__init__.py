"""Training-ready exports (YOLO, COCO) of the registries, versioned and checked."""
