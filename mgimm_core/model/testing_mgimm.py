"""Tiny, fully random MGIMM parts for tests (here and in training/pipeline tests): no downloads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .configuration_mgimm import MGIMMConfig, tiny_config
from .modeling_mgimm import MGIMMForConditionalGeneration
from .processing_mgimm import MGIMMProcessor, build_word_tokenizer

TINY_WORDS = ["describe", "the", "a", "red", "grey", "white", "car", "house", "tank", "ship", "big", "small",
              ":", ".", ",", "region", "near", "road"]


def tiny_model(seed: int = 0, **overrides: Any) -> MGIMMForConditionalGeneration:
    """A tiny_config() model in eval mode, its weights fixed by `seed`."""
    torch.manual_seed(seed)
    model: MGIMMForConditionalGeneration = MGIMMForConditionalGeneration(tiny_config(**overrides))
    model.eval()  # type: ignore[no-untyped-call]  # transformers' (untyped)
    return model


def tiny_processor(config: MGIMMConfig) -> MGIMMProcessor:
    return MGIMMProcessor.from_config(config, build_word_tokenizer(TINY_WORDS))


def random_chip(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, 3) noise: an image chip as the geo core cuts it."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
