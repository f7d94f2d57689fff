"""The CVAT labeling loop: batches, the CVAT client, one labeling cycle."""
