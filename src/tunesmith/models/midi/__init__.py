"""MIDI piano models: note arrays, tokenizers, piano tasks, the MIDI GPT."""
