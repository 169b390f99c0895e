"""Shared fixtures: tiny randomly initialised models the tests build themselves (no downloads)."""

import pytest
import torch

from ptdlib.cost.flops import FlopCounter
from ptdlib.models.embedded import build_model
from ptdlib.models.embedded import embedded_lm
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


@pytest.fixture(scope="module")
def counter(tiny_lm):
    """A FLOP counter (fvcore) on the tiny model, one per test module."""
    return FlopCounter(tiny_lm)


EOS_BOOST = 3.0  # scales the EOS row of the random head so that answers end at varied lengths


def save_tiny_model(tokenizer, directory):
    """Save a seeded tiny model whose answers end at varied lengths (for runs and notebooks on disk)."""
    from ptdlib.models.embedded import save_model

    torch.manual_seed(0)
    model = build_model(tokenizer, **TINY).eval()
    model.lm_head.weight.data[tokenizer.eos_token_id] *= EOS_BOOST
    return save_model(model, tokenizer, directory)
