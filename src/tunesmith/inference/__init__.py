"""Generation for every model family: loading a model for inference, request items, prompt files."""
