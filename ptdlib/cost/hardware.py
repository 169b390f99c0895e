"""Accelerator presets for the cost model, and a function that measures model FLOP utilisation on a GPU.

Peak numbers are **dense** BF16 tensor-core throughput (NVIDIA datasheets quote "with sparsity" figures
that are twice these; a D-LLM forward pass is dense) and memory bandwidth, from NVIDIA's datasheets:

* H100 SXM5 80 GB: "NVIDIA H100 Tensor Core GPU" datasheet (2023): BF16 1,979 TFLOPS with sparsity,
  i.e. 989.5 dense; HBM3 3.35 TB/s.
* H200 SXM 141 GB: "NVIDIA H200 Tensor Core GPU" datasheet (2024): same tensor cores as H100 SXM
  (989.5 dense BF16 TFLOPS), HBM3e 4.8 TB/s.
* A100 SXM 80 GB: "NVIDIA A100 Tensor Core GPU" datasheet (2021): BF16 312 TFLOPS dense (624 with
  sparsity); HBM2e 2,039 GB/s.
* L40S 48 GB: "NVIDIA L40S GPU" datasheet (2023): BF16 362.05 TFLOPS dense (733 with sparsity); GDDR6
  864 GB/s.

Hourly prices are round, illustrative on-demand cloud figures (USD per GPU-hour), not quotes: override
them with your provider's price.

**MFU (model FLOP utilisation)** is the fraction of peak a real forward pass achieves (Chowdhery et al.,
2022, "PaLM", appendix B). The default :data:`ASSUMED_MFU` = 0.40 is an **assumption**, not a
measurement: no GPU was available when this module was written. A D-LLM denoising step is a full
forward pass over prompt + canvas, shaped like LLM prefill (large matrix products), for which 35-55 % of
dense BF16 peak is typical on H100-class GPUs. Run :func:`measure_mfu` on a GPU and pass the result to
the cost model (``ptd cost --mfu``) to replace it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from ptdlib.cost.shapes import LLADA_8B, ModelShape, analytic_flops

#: Assumed model FLOP utilisation of a D-LLM forward pass (see module docstring; not measured here).
ASSUMED_MFU = 0.40

TERA = 1e12


@dataclass(frozen=True)
class Hardware:
    """One accelerator: what the cost model needs to turn FLOPs and weight bytes into seconds and money."""

    name: str  # preset name
    label: str  # marketing name and memory size, for tables
    peak_flops: float  # dense BF16 tensor-core FLOP/s (datasheet, without sparsity)
    mem_bandwidth: float  # bytes/s of device memory (datasheet)
    memory_bytes: float  # device memory, bytes
    price_per_hour: float  # USD per GPU-hour; illustrative on-demand figure, override with your own
    mfu: float = ASSUMED_MFU  # achieved fraction of peak; assumed unless measured with measure_mfu

    def __post_init__(self):
        check_mfu(self.mfu)
        check_price(self.price_per_hour)


def check_mfu(mfu: float) -> None:
    """ValueError unless the model FLOP utilisation ``mfu`` is in (0, 1]."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")


def check_price(price: float) -> None:
    """ValueError if the price per GPU-hour is negative."""
    if price < 0:
        raise ValueError(f"price per GPU-hour must be >= 0, got {price}")


GB = 1e9

#: Preset name -> hardware (sources in the module docstring).
HARDWARE = {
    "h100": Hardware("h100", "H100 SXM 80GB", 989.5 * TERA, 3.35e12, 80 * GB, price_per_hour=3.00),
    "h200": Hardware("h200", "H200 SXM 141GB", 989.5 * TERA, 4.8e12, 141 * GB, price_per_hour=3.80),
    "a100": Hardware("a100", "A100 SXM 80GB", 312 * TERA, 2.039e12, 80 * GB, price_per_hour=1.80),
    "l40s": Hardware("l40s", "L40S 48GB", 362.05 * TERA, 0.864e12, 48 * GB, price_per_hour=1.00),
}


def hardware(name: str) -> Hardware:
    """The :class:`Hardware` preset ``name`` (see :data:`HARDWARE`).

    Raises:
        ValueError: For an unknown preset (the message lists them).
    """
    if name not in HARDWARE:
        raise ValueError(f"unknown hardware preset {name!r}; choose from {', '.join(HARDWARE)}")
    return HARDWARE[name]


def _guess_hardware(device_name: str) -> Hardware | None:
    for key in ("h200", "h100", "a100", "l40s"):
        if key in device_name.lower().replace(" ", ""):
            return HARDWARE[key]
    return None


def measure_mfu(
    shape: ModelShape = LLADA_8B,
    batch_sizes=(1, 8),
    seq_lens=(256, 512, 1024, 2048),
    hw: Hardware | str | None = None,
    device: str | None = None,
    dtype=None,
    warmup: int = 2,
    iters: int = 5,
) -> list[dict]:
    """Time a bf16 forward pass of a ``shape``-sized embedded-architecture model with random weights.

    The model is the project's bidirectional LLaDA-style architecture (SDPA attention), so the timed work is
    what a denoising step computes. Needs about 2 bytes per parameter of GPU memory plus activations (~20 GB
    for LLaDA-8B at batch 8 x 2,048 tokens).

    Args:
        shape: The model's shape (no grouped-query attention, SwiGLU, ``head_dim = d_model / n_heads``).
        batch_sizes: Batch sizes to time.
        seq_lens: Sequence lengths to time.
        hw: Hardware preset or name for the MFU (default: guessed from the CUDA device name).
        device: Torch device (default: cuda); ``"cpu"`` with a small shape only exercises the code path.
        dtype: Weights dtype (default: bfloat16 on CUDA, float32 elsewhere).
        warmup: Untimed passes per point.
        iters: Timed passes per point (the median is reported).

    Returns:
        One dict per (batch, seq_len): ``seconds``, ``flops`` (analytic, 2 per multiply-add), ``flops_per_s``,
        ``mfu`` (achieved / ``hw.peak_flops``; None without hardware) and ``hardware``.

    Raises:
        RuntimeError: Without ``device`` when no CUDA GPU is available.
        ValueError: For a shape the embedded architecture cannot build, or an unknown hardware preset.
    """
    import torch

    from ptdlib.models.modeling import PtdLladaConfig, PtdLladaModel

    device = device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        raise RuntimeError(
            "measure_mfu needs a CUDA GPU and none is available; the cost model uses the "
            f"assumed MFU {ASSUMED_MFU} instead"
        )
    if shape.n_kv_heads != shape.n_heads or shape.mlp != "swiglu" or shape.head_dim is not None:
        raise ValueError(
            f"measure_mfu builds the embedded architecture (no grouped-query attention, SwiGLU, "
            f"head_dim = d_model / n_heads); {shape.name} does not fit it"
        )
    if isinstance(hw, str):
        hw = hardware(hw)
    if hw is None:
        hw = _guess_hardware(torch.cuda.get_device_name()) if device.startswith("cuda") else None
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    config = PtdLladaConfig(
        vocab_size=shape.vocab_size,
        d_model=shape.d_model,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        mlp_hidden=shape.mlp_hidden,
        max_position_embeddings=shape.max_positions,
        learned_positions=False,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in bf16: an fp32 LLaDA-8B would need 32 GB
    try:
        with torch.device(device):
            model = PtdLladaModel(config).eval()
    finally:
        torch.set_default_dtype(previous)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rows = []
    for batch in batch_sizes:
        for t in seq_lens:
            ids = torch.randint(0, shape.vocab_size, (batch, t), device=device)
            times = []
            with torch.no_grad():
                for i in range(warmup + iters):
                    sync()
                    start = time.perf_counter()
                    model(input_ids=ids)
                    sync()
                    if i >= warmup:
                        times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            flops = analytic_flops(shape, t, batch)["total"]
            rows.append(
                {
                    "batch": batch,
                    "seq_len": t,
                    "seconds": seconds,
                    "flops": flops,
                    "flops_per_s": flops / seconds,
                    "mfu": flops / seconds / hw.peak_flops if hw is not None else None,
                    "hardware": hw.name if hw is not None else device,
                }
            )
    return rows
