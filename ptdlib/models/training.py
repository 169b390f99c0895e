"""Training the embedded model with LLaDA's SFT recipe (``ptd train-model``).

Recipe (Nie et al., 2025, "Large Language Diffusion Models", SFT section): the prompt is never masked;
the response is padded with EOS to the canvas; each sample draws a mask ratio t ~ U(0, 1] (as
``(1 - eps) t + eps``), masks each response token with probability t, and the loss is the cross-entropy on
masked positions weighted by 1/t, divided by the canvas length.

Choices of this project (the first measured on a prototype, see docs/design.md §13):

* **Length-bucketed canvases**: batches are grouped by answer length and most are cropped to the longest
  answer plus a slack drawn uniformly up to the full canvas (so the canvas end carries no information on
  the answer length), the rest use the full canvas (where the length signal is read). Steps get cheaper.
* **Recipes**: ``recipe="dllm-var"`` trains with dLLM-Var's recipe instead (end tokens always masked,
  several samples packed per row; :mod:`ptdlib.models.dllm_var`).
* **Exact resumption**: the data and masks of step ``s`` are a function of (seed, s) only, so a run resumed
  from a checkpoint sees exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ptdlib.models.batching import answer_canvas, left_pad, with_canvas
from ptdlib.models.embedded import build_model, save_model
from ptdlib.models.tokenizer import build_tokenizer, encode_prompt
from ptdlib.tasks import iter_split


@dataclass(frozen=True)
class TrainConfig:
    """Training run settings; written into the training card."""

    steps: int = 8000  # optimizer steps (the cosine schedule spans them)
    batch_size: int = 32  # queries per step
    lr: float = 2e-3  # peak AdamW learning rate
    warmup: int = 200  # linear warm-up steps
    min_lr_frac: float = 0.05  # cosine floor as a fraction of lr
    weight_decay: float = 0.01  # AdamW decoupled weight decay (matrices only)
    grad_clip: float = 1.0  # global gradient-norm clip
    canvas: int = 128  # full response canvas
    full_canvas_frac: float = 0.25  # share of batches trained at the full canvas (the probe's setting)
    bucket_batches: int = 16  # batches drawn together and grouped by answer length
    mask_eps: float = 1e-3  # lowest mask ratio, as in LLaDA
    seed: int = 0  # seeds data, masks and initialisation
    threads: int = 0  # torch CPU threads (0: torch's default)
    checkpoint_every: int = 200  # steps between resumable checkpoints
    eval_every: int = 1000  # steps between held-out evaluations (0: only at the end)
    time_limit_s: float = 0.0  # stop early (and save) after this many seconds (0: no limit)
    model: dict = field(default_factory=dict)  # PtdLladaConfig overrides
    init_from: str = ""  # a saved model directory whose weights start the run (fine-tuning); "" = random init
    family_weights: dict = field(default_factory=dict)  # training-mix weights per family (unnamed: 1)
    recipe: str = "llada-sft"  # one of RECIPES: LLaDA's SFT, or dLLM-Var's (end tokens masked, packed samples)
    pack_frac: float = 0.75  # dllm-var: share of steps whose rows pack several samples (the rest: one each)
    pack_width: int = 192  # dllm-var: tokens per packed row (at most the model's positions)
    snapshot_every: int = 0  # steps between saved model snapshots in work_dir/step-NNNNNN (0: none), to choose on calib

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a mapping of its fields.

        Raises:
            ValueError: On unknown keys (named with the allowed ones) or an unknown recipe.
        """
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown training settings {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**d)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown training recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")


#: Training recipes: LLaDA's SFT (Nie et al., 2025) and dLLM-Var's (Yang et al., 2025; see ``dllm_var``).
RECIPES = ("llada-sft", "dllm-var")


def lr_at(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up then cosine decay to ``min_lr_frac * lr``.

    With a time limit, the decay follows whichever is further along, steps or time, so a run that the
    clock stops early still ends at the floor of its schedule.

    Args:
        step: The 0-based step.
        cfg: The training config (``lr``, ``warmup``, ``steps``, ``min_lr_frac``, ``time_limit_s``).
        elapsed_s: Seconds trained so far.

    Returns:
        The learning rate of ``step``.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.time_limit_s:
        progress = max(progress, elapsed_s / cfg.time_limit_s)
    progress = min(1.0, progress)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


class BatchSource:
    """Deterministic batches: step ``s`` gets the same data whatever step the run started from."""

    def __init__(self, tokenizer, cfg: TrainConfig, split: str = "train"):
        self.tok, self.cfg, self.split = tokenizer, cfg, split
        self.eos = tokenizer.eos_token_id
        self._group, self._batches = None, None

    def _make_group(self, g: int):
        cfg = self.cfg
        stream = iter_split(self.split, seed=cfg.seed * 1_000_003 + g, family_weights=cfg.family_weights or None)
        qs = [next(stream) for _ in range(cfg.batch_size * cfg.bucket_batches)]
        qs.sort(key=lambda q: q.answer_length)
        batches = [qs[i : i + cfg.batch_size] for i in range(0, len(qs), cfg.batch_size)]
        random.Random(f"{cfg.seed}|{g}").shuffle(batches)
        return batches

    def batch(self, step: int):
        """The batch of step ``step``: queries bucketed by answer length, canvas drawn from the seed and step.

        Returns:
            ``(prompt_ids (B, P), prompt_attn (B, P), target (B, L))``; the target is the answers padded with
            EOS to the step's canvas length ``L``.
        """
        cfg = self.cfg
        g, j = divmod(step, cfg.bucket_batches)
        if g != self._group:
            self._group, self._batches = g, self._make_group(g)
        qs = self._batches[j]
        rng = random.Random(f"{cfg.seed}|canvas|{step}")
        answers = [self.tok(q.answer, add_special_tokens=False)["input_ids"] for q in qs]
        longest = max(len(a) for a in answers)
        if rng.random() < cfg.full_canvas_frac:
            canvas_len = cfg.canvas
        else:
            canvas_len = rng.randint(min(longest + 1, cfg.canvas), cfg.canvas)
        prompt_ids, prompt_attn = left_pad([encode_prompt(self.tok, q.prompt) for q in qs], self.tok.pad_token_id)
        target = answer_canvas(answers, canvas_len, self.eos)
        return prompt_ids, prompt_attn, target


def diffusion_loss(model, prompt_ids, prompt_attn, target, mask_id: int, eps: float, gen: torch.Generator):
    """LLaDA SFT loss on one batch: masked-token cross-entropy weighted by 1/t, per canvas token.

    Each row draws ``t ~ U(eps, 1]`` and masks each canvas token with probability ``t`` (Nie et al., 2025).

    Args:
        model: The network (returns ``.logits``).
        prompt_ids: Left-padded prompt ids, shape ``(B, P)``.
        prompt_attn: Their attention mask, shape ``(B, P)``.
        target: The EOS-padded answers, shape ``(B, L)``.
        mask_id: The mask token id.
        eps: Lower bound of ``t``.
        gen: Generator of the mask draws.

    Returns:
        The scalar loss (sum over masked positions divided by ``B * L``).
    """
    B, L = target.shape
    t = (1 - eps) * torch.rand(B, 1, generator=gen) + eps
    masked = torch.rand(B, L, generator=gen) < t
    canvas = torch.where(masked, torch.full_like(target, mask_id), target)
    ids, attn = with_canvas(prompt_ids, prompt_attn, canvas)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, prompt_ids.shape[1] :]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="none")
    return ((ce.view(B, L) * masked) / t).sum() / (B * L)


def lineage(card: dict, init_card: dict, init_from: str) -> dict:
    """Fields that carry a continued run's history: where it started and the totals over every phase.

    ``init_card`` is kept, less its evaluation history, under ``initialised_from.card``, so a model continued
    several times keeps every phase's configuration and held-out metrics, one nested card per phase.

    Args:
        card: This run's card (``steps_done``, ``train_seconds``).
        init_card: The training card of the model in ``init_from`` (empty if it has none).
        init_from: The directory the run started from.

    Returns:
        ``{"initialised_from": ..., "steps_total": ..., "train_seconds_total": ...}``.
    """
    prev_steps = init_card.get("steps_total", init_card.get("steps_done", 0))
    prev_seconds = init_card.get("train_seconds_total", init_card.get("train_seconds", 0.0))
    prev_card = {k: v for k, v in init_card.items() if k != "history"}
    return {
        "initialised_from": {
            "path": init_from,
            "steps_total": prev_steps,
            "train_seconds_total": prev_seconds,
            "card": prev_card,
        },
        "steps_total": prev_steps + card["steps_done"],
        "train_seconds_total": round(prev_seconds + card["train_seconds"], 1),
    }


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint written by :func:`train` (``model``/``optimizer`` state, ``step``, ``config``...).

    Read with ``torch.load(..., weights_only=True)``: tensors and plain containers only, so a crafted file
    cannot run code.

    Args:
        path: The ``checkpoint.pt`` file.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: If the file is absent.
        ValueError: If it cannot be read or is not such a checkpoint (no ``model`` state dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a cut file, or one holding objects other than tensors and plain containers
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a training checkpoint of the embedded model (no 'model' state dict)")
    return ckpt


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (torch's unpickling errors run to a page)."""
    return (str(err).strip().splitlines() or [""])[0]


def _atomic_save(obj, path: Path):
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, out_dir: str | Path, work_dir: str | Path | None = None, evaluate=None) -> dict:
    """Train (or resume) the embedded model; save it with ``save_pretrained`` and a training card.

    Args:
        cfg: The training config.
        out_dir: Directory of the finished model.
        work_dir: Directory of the resumable ``checkpoint.pt`` and snapshots (default: ``out_dir/../<name>.ckpt``).
        evaluate: Called as ``evaluate(model, tokenizer) -> dict`` for the held-out metrics of the card; None:
            none.

    Returns:
        The training card saved with the model.

    Raises:
        ValueError: If ``work_dir`` holds a checkpoint of another config, or ``pack_width`` exceeds the model's
            positions.
    """
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir.parent / f"{out_dir.name}.ckpt"
    work_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    model = build_model(tok, **cfg.model)
    if cfg.init_from:
        from ptdlib.models.embedded import load_pretrained

        start_model, _ = load_pretrained(cfg.init_from)
        model.load_state_dict(start_model.state_dict())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    ckpt_path = work_dir / "checkpoint.pt"
    start, elapsed, history = 0, 0.0, []
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        if ck["config"] != asdict(cfg):
            raise ValueError(f"{ckpt_path} was written by another training config; remove it or use the same one")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, elapsed, history = ck["step"], ck["elapsed_s"], ck["history"]
    source = BatchSource(tok, cfg)
    if cfg.recipe == "dllm-var":
        from ptdlib.models.dllm_var import DllmVarBatchSource, dllm_var_loss
        from ptdlib.models.metrics import end_token_ids

        if cfg.pack_width > model.config.max_position_embeddings:
            raise ValueError(
                f"pack_width {cfg.pack_width} exceeds the model's {model.config.max_position_embeddings} positions"
            )
        var_source = DllmVarBatchSource(tok, cfg, source, tuple(end_token_ids(model, tok)))

        def step_loss(step, gen):
            return dllm_var_loss(model, var_source.batch(step), tok.mask_token_id, cfg.mask_eps, gen)
    else:

        def step_loss(step, gen):
            return diffusion_loss(model, *source.batch(step), tok.mask_token_id, cfg.mask_eps, gen)

    model.train()
    t0 = time.time() - elapsed
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", dynamic_ncols=True)
    step, ema = start, None
    for step in bar:
        lr = lr_at(step, cfg, time.time() - t0)
        for group in opt.param_groups:
            group["lr"] = lr
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        loss = step_loss(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}", lr=f"{lr:.1e}")
        done = step + 1
        timed_out = cfg.time_limit_s and time.time() - t0 > cfg.time_limit_s
        if evaluate and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            model.eval()
            history.append({"step": done, "elapsed_s": round(time.time() - t0, 1), "loss": ema, **evaluate(model, tok)})
            model.train()
            tqdm.write(json.dumps(history[-1]))
        if cfg.snapshot_every and done % cfg.snapshot_every == 0:
            save_model(model, tok, work_dir / f"step-{done:06d}", {"step": done, "config": asdict(cfg)})
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or timed_out:
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": done,
                    "elapsed_s": time.time() - t0,
                    "history": history,
                    "config": asdict(cfg),
                },
                ckpt_path,
            )
        if timed_out:
            tqdm.write(f"time limit of {cfg.time_limit_s:.0f} s reached at step {done}")
            break
    else:
        done = cfg.steps
    model.eval()
    card = {
        "steps_done": done,
        "steps_planned": cfg.steps,
        "train_seconds": round(time.time() - t0, 1),
        "loss_ema": ema,
        "config": asdict(cfg),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "history": history,
    }
    if cfg.init_from:
        from ptdlib.models.embedded import training_card

        card.update(lineage(card, training_card(cfg.init_from), cfg.init_from))
    if evaluate:
        card["heldout"] = evaluate(model, tok)
    save_model(model, tok, out_dir, card)
    return card
