"""HiggsAudio v2 (Boson AI) in tunesmith: its audio tokenizer in tunesmith's own modules, and the LM side.

- :mod:`tunesmith.models.higgs.tokenizer` — DAC acoustic + HuBERT semantic + RVQ, loaded from a
  transformers tokenizer directory (no torchaudio).
- :mod:`tunesmith.models.higgs.prompt` — the chat prompt the model was trained with, the delay pattern,
  audio labels on the assistant audio only.
- :mod:`tunesmith.models.higgs.loss` — the training loss as a sum over audio targets.
- :mod:`tunesmith.models.higgs.generation` — greedy generation with the delay pattern enforced.
- :mod:`tunesmith.models.higgs.checkpoint` — checking a checkpoint folder, resolving its audio tokenizer.
"""
