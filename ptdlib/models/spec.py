"""One model spec everywhere: which model to evaluate, and the one function that loads it.

A run, a bench, the report and every notebook name their model the same way. The same spec is the ``model:`` section of a run config, the ``model`` parameter of every notebook (a dict),
and what ``ptd report --model`` and ``ptd bench ... --model`` fill in::

    model: {path: /models/LLaDA-8B-Instruct, dtype: bfloat16}        # family read from config.json
    model: {path: /models/Dream-v0-Instruct-7B, dtype: bfloat16}
    model: {path: /models/SomeOtherDLLM, family: remote, trust_remote_code: true, style: llada}

:func:`load_lm` turns it into a :class:`~ptdlib.models.base.DiffusionLM`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ptdlib.validation import check_types

#: how a model path is loaded
LOADERS = ("auto", "embedded", "hf", "checkpoint")
#: families a spec may name: auto (from config.json), the native ones, or remote (the checkpoint's own code)
FAMILY_CHOICES = ("auto", "llada", "dream", "remote")
#: logits conventions of non-native checkpoints
STYLE_CHOICES = ("llada", "dream")
DTYPES = ("float32", "bfloat16", "float16")
#: model_type of the embedded architecture's config.json (loaded with its own prompt format)
EMBEDDED_MODEL_TYPE = "ptd_llada"
#: ``path`` value naming the shipped embedded model
EMBEDDED = "embedded"


def check_choice(where: str, value, allowed):
    """Check that ``value`` is one of ``allowed``.

    Args:
        where: The setting's name, used in the message (e.g. ``"model.dtype"``).
        value: The value to check.
        allowed: The accepted values.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: If ``value`` is not in ``allowed`` (the message names it and the choices).
    """
    if value not in allowed:
        raise ValueError(f"unknown {where} {value!r}; choose from {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """Which model to evaluate and how to load it (see module docstring)."""

    path: str = EMBEDDED  # a model directory, a training checkpoint (.pt), or "embedded" (data/models/ptd-tiny)
    loader: str = "auto"  # auto: embedded architecture -> embedded, .pt file -> checkpoint, other directory -> hf
    family: str = "auto"  # hf directories: auto (config.json decides), llada, dream, or remote (own code)
    style: str = "llada"  # logits convention of a remote-code model: llada (logit i -> token i) or dream (i + 1)
    trust_remote_code: bool = False  # run the checkpoint's own Python code (only for remote families); opt-in
    dtype: str = "float32"  # weights dtype; float32 is exact on CPU, bfloat16 halves GPU memory

    def __post_init__(self):
        check_choice("model.loader", self.loader, LOADERS)
        check_choice("model.family", self.family, FAMILY_CHOICES)
        check_choice("model.style", self.style, STYLE_CHOICES)
        check_choice("model.dtype", self.dtype, DTYPES)
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"model.trust_remote_code must be true or false, got {self.trust_remote_code!r}")
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(f"model.path must be a path or 'embedded', got {self.path!r}")

    @classmethod
    def from_dict(cls, data: dict | None) -> ModelSpec:
        """A spec from a mapping (a run config's ``model:``, a notebook's ``model`` parameter).

        Args:
            data: The spec's fields; None or ``{}`` (or a None ``path``) means the embedded model.

        Returns:
            The :class:`ModelSpec`.

        Raises:
            ValueError: On unknown keys (named), a value of the wrong type, or a value not among the choices.
        """
        data = dict(data or {})
        allowed = list(asdict(cls()))
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in model; allowed keys: {', '.join(allowed)}")
        if data.get("path") is None:
            data.pop("path", None)
        check_types(cls, data, "model")  # types from the annotations: "false" is not False
        return cls(**data)


def resolve_device(device: str) -> str:
    """The torch device name that ``device`` means.

    Args:
        device: ``auto`` (``cuda`` where available, else ``cpu``) or a torch device name.

    Returns:
        The device name; anything but ``auto`` is returned unchanged once torch accepts it.

    Raises:
        ValueError: If torch does not accept ``device`` (e.g. ``gpu0``); the message names it.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or another torch device name"
        ) from None
    return device


def resolve_loader(spec: ModelSpec) -> tuple[str, Path]:
    """The loader and the path that ``spec`` means.

    An ``auto`` loader is ``checkpoint`` for a file, ``embedded`` for a directory whose ``config.json`` names the
    embedded architecture, and ``hf`` for any other model directory.

    Args:
        spec: The model spec.

    Returns:
        ``(loader, path)``.

    Raises:
        FileNotFoundError: If an ``auto`` spec's path is neither a file nor a directory with ``config.json``.
    """
    from ptdlib.models.embedded import DEFAULT_MODEL_DIR

    path = DEFAULT_MODEL_DIR if spec.path == EMBEDDED else Path(spec.path)
    if spec.loader != "auto":
        return spec.loader, path
    if path.is_file():
        return "checkpoint", path
    if (path / "config.json").exists():
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        return ("embedded" if model_type == EMBEDDED_MODEL_TYPE else "hf"), path
    hint = " (train the shipped model with `ptd train-model`)" if spec.path == EMBEDDED else ""
    raise FileNotFoundError(
        f"model.path {path} is neither a model directory (with config.json) nor a checkpoint file{hint}"
    )


def load_lm(spec: ModelSpec | dict | None = None, device: str = "auto"):
    """Load the model that ``spec`` names.

    Args:
        spec: A :class:`ModelSpec`, or a mapping for :meth:`ModelSpec.from_dict`; None: the embedded model.
        device: Torch device name, or ``auto`` (cuda if present, else cpu).

    Returns:
        The :class:`~ptdlib.models.base.DiffusionLM`, in eval mode, on ``device``.

    Raises:
        FileNotFoundError: If the spec's path is missing.
        ValueError: For a bad spec or device, or an unloadable checkpoint.
    """
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    device, dtype = resolve_device(device), getattr(torch, spec.dtype)
    loader, path = resolve_loader(spec)
    if loader == "embedded":
        from ptdlib.models.embedded import load_embedded

        return load_embedded(path, device=device, dtype=dtype)
    if loader == "checkpoint":  # a training checkpoint of the embedded model: its "model" state dict
        from ptdlib.models.embedded import build_model, embedded_lm
        from ptdlib.models.tokenizer import build_tokenizer

        tok = build_tokenizer()
        model = build_model(tok)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
            model.load_state_dict(ckpt["model"])
        except Exception as e:
            raise ValueError(
                f"cannot load the training checkpoint {path}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        name = path.parent.name if path.parent.name else path.stem
        return embedded_lm(
            model.to(device=device, dtype=dtype).eval(), tok, model_id=f"{name}@step{ckpt.get('step', '?')}"
        )
    from ptdlib.models.hf import load_hf_dllm

    return load_hf_dllm(
        path, family=spec.family, style=spec.style, trust_remote_code=spec.trust_remote_code, device=device, dtype=dtype
    )


def add_model_arguments(parser, *, what: str = "the model to evaluate") -> None:
    """Add the model-spec options every command shares to ``parser``.

    The options are ``--model PATH --family --dtype --trust-remote-code --device`` (the fields of
    :class:`ModelSpec`, plus the device).

    Args:
        parser: An ``argparse.ArgumentParser``; the options go into a "model" argument group.
        what: The group's description.
    """
    group = parser.add_argument_group("model", f"{what} (the fields of a run config's model: section)")
    group.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="model directory or training checkpoint (default: the embedded model)",
    )
    group.add_argument(
        "--family",
        default="auto",
        choices=FAMILY_CHOICES,
        help="model family (default: read from config.json; remote: the checkpoint's own code)",
    )
    group.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype (default: float32)")
    group.add_argument(
        "--trust-remote-code", action="store_true", help="let a checkpoint of an unknown family run its own Python code"
    )
    group.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")


def spec_from_args(args) -> ModelSpec:
    """The :class:`ModelSpec` of options added by :func:`add_model_arguments`.

    Args:
        args: The parsed ``argparse.Namespace``.

    Returns:
        The spec (``--device`` is not part of it).
    """
    return ModelSpec(
        path=args.model or EMBEDDED,
        family=args.family,
        dtype=args.dtype,
        trust_remote_code=bool(args.trust_remote_code),
    )
