"""What a truncated result gets: a canvas that held no EOS may have cut the answer.

* ``max`` — re-run from scratch at the maximum canvas (Predict-then-Diffuse's rule);
* ``double`` — re-run from scratch at twice the canvas until the result is not truncated or the maximum is
  reached;
* ``extend`` — keep what was decoded, append masks to twice the canvas and continue denoising (the committed
  tokens stay; only the new positions are decoded);
* ``none`` — keep the truncated result.

Every re-run's forward passes are reported with kind ``rerun`` so the ledger counts them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# the recovery names and the re-run canvas rule are the cost model's (ptdlib.cost.plans), so the two agree
from ptdlib.cost.plans import RECOVERIES, check_recovery, next_canvas  # noqa: F401  (RECOVERIES re-exported)


def recover(
    name: str,
    outputs: list,
    canvases: np.ndarray,
    max_canvas: int,
    mask_id: int,
    resample: Callable[[list[int], list[int], list | None], list],
) -> tuple[list, np.ndarray, np.ndarray]:
    """Apply recovery ``name`` to the truncated entries of ``outputs``.

    Args:
        name: One of :data:`RECOVERIES` (``max``, ``double``, ``extend``, ``none``).
        outputs: The first attempt's sample outputs (``truncated``, ``tokens``).
        canvases: Their canvas lengths.
        max_canvas: The longest canvas; a truncated result at it is kept.
        mask_id: The mask token id (``extend`` appends masks).
        resample: ``resample(indices, canvases, init)`` samples the queries at ``indices`` (positions in
            ``outputs``) with the given canvases, continuing from ``init`` canvases when not None, reporting
            passes as re-runs.

    Returns:
        ``(final outputs, final canvases, number of re-runs per query)``.

    Raises:
        ValueError: For an unknown recovery name.
    """
    check_recovery(name)
    outputs, canvases = list(outputs), np.array(canvases, dtype=int)
    reruns = np.zeros(len(outputs), dtype=int)
    if name == "none":
        return outputs, canvases, reruns
    while True:
        todo = [i for i, o in enumerate(outputs) if o.truncated and canvases[i] < max_canvas]
        if not todo:
            return outputs, canvases, reruns
        new = next_canvas(canvases[todo], name, max_canvas).tolist()
        init = None
        if name == "extend":
            init = [list(outputs[i].tokens) + [mask_id] * (n - len(outputs[i].tokens)) for i, n in zip(todo, new)]
        for i, o, n in zip(todo, resample(todo, new, init), new):
            outputs[i], canvases[i] = o, n
            reruns[i] += 1
