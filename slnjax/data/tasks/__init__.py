"""Task builders (TFDS, array_record) and their verifiers; one module per task."""
