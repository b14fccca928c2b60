"""The error every artifact reader and writer raises (one class, so callers catch one thing)."""


class ArtifactError(ValueError):
    """A bad artifact or checkpoint file; the message names the file and the stream, tensor or byte offset."""
