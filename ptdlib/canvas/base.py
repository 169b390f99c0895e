"""The canvas-policy interface: choose each query's canvas before sampling.

A policy is a small object with one job (docs/design.md §6): ``choose(lm, queries, limits, callbacks)``
returns an int array with one canvas length per query (``queries`` are :class:`~ptdlib.tasks.Query` objects,
``limits`` a :class:`CanvasLimits`). It may run its own forward passes (a SmartCrop probe, a predictor's
prompt pass) and reports them to ``callbacks`` so that the FLOP ledger counts them. Policies that learn
override :meth:`CanvasPolicy.fit`; policies that change how the sampler runs override
:meth:`CanvasPolicy.sampler_config` or :meth:`CanvasPolicy.editor`. A policy never owns the sampling loop;
what a truncated result gets is decided by a :mod:`~ptdlib.canvas.recovery` rule.

Every chosen canvas is rounded up to a multiple of ``limits.round_to`` (a run requires the sampler's block
length to divide it) and capped at ``limits.max_canvas`` by :func:`round_canvas`, so the sampler always
receives a valid length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ptdlib.cost.plans import round_to_block
from ptdlib.sampling.sampler import SamplerConfig


@dataclass(frozen=True)
class CanvasLimits:
    """The lengths a policy may choose from: multiples of ``round_to`` up to ``max_canvas``."""

    max_canvas: int = 128  # the longest canvas (the fixed baseline's, and the re-run's)
    round_to: int = 32  # the sampler's block length: canvases are whole blocks

    def __post_init__(self):
        if self.round_to <= 0 or self.max_canvas <= 0:
            raise ValueError(f"max_canvas and round_to must be positive, got {self.max_canvas}, {self.round_to}")
        if self.max_canvas % self.round_to:
            raise ValueError(f"max_canvas {self.max_canvas} must be a multiple of round_to {self.round_to}")


def round_canvas(lengths, limits: CanvasLimits) -> np.ndarray:
    """Round token counts up to whole blocks, at least one block, at most ``max_canvas``.

    Args:
        lengths: Token counts (array-like).
        limits: The block length (``round_to``) and the cap (``max_canvas``).

    Returns:
        Int array of canvas lengths, same shape as ``lengths``.
    """
    return round_to_block(lengths, limits.round_to, limits.max_canvas)


class CanvasPolicy(ABC):
    """Chooses a canvas length per query. Subclasses set ``name`` and implement :meth:`choose`."""

    name: ClassVar[str]
    #: True for policies that cannot be deployed (they read the answer's length).
    oracle: ClassVar[bool] = False

    @property
    def online(self) -> bool:
        """True if the policy learns from served queries.

        An online policy is run batch by batch, and told each batch's outcome through :meth:`observe` before it
        chooses the next batch's canvases.
        """
        return False

    def observe(self, queries: Sequence, lengths, canvases, truncated) -> None:
        """Feedback after serving ``queries`` (default: ignored).

        Args:
            queries: The queries served.
            lengths: Their final response lengths in tokens; a length is censored at the final canvas when
                recovery left a result truncated.
            canvases: The canvases first chosen for them.
            truncated: Whether that first attempt was truncated, per query.
        """

    def fit(
        self,
        lm,
        train,
        train_lengths,
        calib=None,
        calib_lengths=None,
        limits: CanvasLimits | None = None,
        recovery: str = "max",
        sampler: SamplerConfig | None = None,
    ) -> CanvasPolicy:
        """Learn from ``train`` queries and their own lengths; calibrate on ``calib`` (default: nothing).

        Args:
            lm: The model (for policies that read prompts or run passes).
            train: Training queries.
            train_lengths: Their own response lengths in tokens.
            calib: Calibration queries, if the policy calibrates.
            calib_lengths: Their own lengths.
            limits: The canvas limits the run will use.
            recovery: How the run will recover truncated answers, for policies that price it.
            sampler: The run's base sampler settings (before :meth:`sampler_config`), for policies that price
                the sampler's passes.

        Returns:
            The policy itself.
        """
        return self

    def check_recovery(self, recovery: str) -> None:
        """Check that this policy can run with truncation recovery ``recovery`` (default: any).

        Raises:
            ValueError: If it cannot.
        """

    def sampler_config(self, base: SamplerConfig) -> SamplerConfig:
        """The sampler settings this policy runs with (default: unchanged)."""
        return base

    def check_config(self, limits: CanvasLimits, sampler: SamplerConfig) -> None:
        """Check the settings from the configuration alone (default: no check).

        Called by :class:`~ptdlib.experiment.config.RunConfig` before a model is loaded or anything is written.

        Args:
            limits: The run's canvas limits.
            sampler: The run's base sampler settings.

        Raises:
            ValueError: For settings this policy cannot run with.
        """

    def initial_canvases(self, lm, canvases) -> list[list[int]] | None:
        """Per query the canvas to start from (committed tokens and masks), or None for all masks (default).

        Args:
            lm: The model.
            canvases: The chosen canvas length per query.
        """
        return None

    def editor(self, limits: CanvasLimits):
        """The :class:`~ptdlib.sampling.edits.CanvasEditor` the sampler runs with on the first attempt.

        Policies that grow or shrink canvases during denoising (DAEDAL, ρ-EOS) return one; the default is None.
        """
        return None

    @abstractmethod
    def choose(self, lm, queries: Sequence, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """Choose a canvas length per query.

        Args:
            lm: The :class:`~ptdlib.models.base.DiffusionLM`.
            queries: The queries (``qid``, ``prompt``).
            limits: Block length and maximum canvas.
            callbacks: Every forward pass the policy runs is reported to them (e.g. a probe).

        Returns:
            Int array of shape ``(n_queries,)``: whole blocks, at most ``limits.max_canvas``.
        """

    def params(self) -> dict:
        """The policy's parameters, for result rows (JSON-serialisable)."""
        return {}
