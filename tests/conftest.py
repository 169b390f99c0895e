"""Shared fixtures: tiny randomly initialised models the tests build themselves (no downloads)."""

import pytest
import torch

from ptdlib.models.embedded import build_model
from ptdlib.models.embedded_lm import embedded_lm
from ptdlib.models.tokenizer import build_tokenizer

# Tiny models gain nothing from several threads, and on a busy 2-core machine threads contend badly.
torch.set_num_threads(1)

TINY = dict(d_model=32, n_layers=2, n_heads=2, mlp_hidden=64)  # seconds-fast, same architecture


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    torch.manual_seed(0)
    return build_model(tokenizer, **TINY).eval()


@pytest.fixture(scope="session")
def tiny_lm(tiny_model, tokenizer):
    """The embedded architecture at a tiny size behind the DiffusionLM interface."""
    return embedded_lm(tiny_model, tokenizer, model_id="tiny-test")
