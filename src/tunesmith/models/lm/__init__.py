"""MusicGen-style language model over codec tokens: patterns, conditioners, the model."""

from tunesmith.models.lm.conditioners import (
    Conditioner,
    ConditionerConfig,
    ConditionTensors,
    build_vocabularies,
    drop_conditions,
)
from tunesmith.models.lm.model import LMConfig, LMModel, build_lm
from tunesmith.models.lm.patterns import Pattern
from tunesmith.models.lm.text_tokenizer import TextTokenizer

__all__ = [
    "ConditionTensors",
    "Conditioner",
    "ConditionerConfig",
    "LMConfig",
    "LMModel",
    "Pattern",
    "TextTokenizer",
    "build_lm",
    "build_vocabularies",
    "drop_conditions",
]
