"""Train the default model (ImageGPT architecture and palette) on a small CPU, across sessions.

Engineering for a small shared CPU (each measured, see docs/training.md):
- the lean module in export/igpt_torch.py (SDPA attention, no cache objects)
  instead of transformers' eager ImageGPT; its state dict loads unchanged into
  ImageGPTForCausalImageModeling for export;
- tokens precomputed once by export/train_data.py, one array per image side;
- every side 8..32, one side per batch (about 8,192 tokens a batch), fed at the
  codec's "grid" positions (codec/runtime/positions.py: token (row, col) at row * 32 + col);
- warm start from a shipped ONNX bundle (`--init-onnx`), or colour-aware
  initialisation for a fresh model;
- warm-up, then a constant rate, then a cosine cool-down over the last
  `--decay-steps` of `--total-steps` ("warmup-stable-decay"): a run that spans
  many sessions can be extended while in its constant phase; an exponential
  moving average of the weights (`ema`) stands in for a cooled-down model between;
- one resumable checkpoint (weights, EMA, optimizer, data cursors, RNG state,
  schedule, step, full history, provenance), written atomically; SIGTERM or
  the time budget end a run cleanly with the checkpoint saved.

Modes (the first argument; default `train`):
    train    train or resume `--out/checkpoint.pt` (seeded from `--resume-from` if absent)
    publish  copy `--out/checkpoint.pt` to `--checkpoint-file` and write its history JSON beside
    hf       write a transformers checkpoint directory (EMA weights) to `--hf-dir`
    report   bits/token of `--onnx` and/or `--checkpoint-file` models on the pool's held-out sets,
             at sides 8, 16, 24, 28, 32, grid and raster positions
    plot     train and validation curves of a history JSON as a PNG (needs matplotlib)

Resume the committed checkpoint in the background (one command):
    nohup nice -n 19 python export/train.py --out runs/default \\
        --resume-from export/checkpoint/default_model.pt --threads 1 > runs/default.log 2>&1 &

Why one module of ~800 lines: a training run is one resumable state machine (the
checkpoint holds model, EMA, optimizer, schedule, data position and history), and its
subcommands (train, hf, publish, report, plot) read and write that one state; splitting
it would spread the checkpoint's schema over several files. The model (igpt_torch) and
the data pipeline (train_data) already live apart.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from igpt_codec.export.igpt_torch import IGPT, IGPTShape, to_transformers
from igpt_codec.export.make_random_checkpoint import write_preprocessor_config
from igpt_codec.runtime.positions import GRID, RASTER, positions

SOS = 512
LN2 = math.log(2.0)
PALETTE_PATH = Path(__file__).parent / "data" / "imagegpt_clusters.npy"
CHECKPOINT_FILE = Path(__file__).parent / "checkpoint" / "default_model.pt"
TOKENS_PER_BATCH = 8192
EVAL_NAMES = ("heldout", "unlike", "unlikefresh", "heldout_crops")

PRESETS: dict[str, IGPTShape] = {
    "micro": IGPTShape(n_embd=32, n_layer=1, n_head=2),  # tests only
    "tiny": IGPTShape(n_embd=96, n_layer=3, n_head=2),
    "small": IGPTShape(n_embd=128, n_layer=4, n_head=2),
    "medium": IGPTShape(n_embd=192, n_layer=6, n_head=3),
    "large": IGPTShape(n_embd=256, n_layer=8, n_head=8),
}


# --------------------------------------------------------------------------- model


def colour_aware_init(model: IGPT, palette: np.ndarray, seed: int) -> None:
    """Start embeddings and output rows from colour geometry instead of pure noise.

    Output row i gets [P c_i, -|c_i|^2 / 2 u] so that a hidden state h = P mu + u
    gives logit_i = -|mu - c_i|^2 / 2 + const: a bump around a predicted colour mu.
    """
    gen = torch.Generator().manual_seed(seed)
    d = model.shape.n_embd
    colours = torch.as_tensor(palette, dtype=torch.float32)  # (512, 3)
    basis, _ = torch.linalg.qr(torch.randn(d, 4, generator=gen))  # orthonormal columns
    proj, unit = basis[:, :3], basis[:, 3]
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[:512] += 0.5 * colours @ proj.T
        head = model.lm_head.weight
        head += 2.0 * (colours @ proj.T - 0.5 * (colours**2).sum(1, keepdim=True) * unit)
        wpe = model.transformer.wpe.weight
        n_pos = wpe.shape[0]
        side = round(math.sqrt(n_pos))
        pos = torch.arange(n_pos)
        rows, cols = (pos // side).float(), (pos % side).float()
        n_freq = max(1, min(8, d // 8))
        feats = []
        for k in range(n_freq):
            freq = math.pi / side * (2**k) / 2
            feats += [torch.sin(rows * freq), torch.cos(rows * freq)]
            feats += [torch.sin(cols * freq), torch.cos(cols * freq)]
        feat = torch.stack(feats, 1)  # (n_pos, 4 n_freq)
        mix = torch.randn(feat.shape[1], d, generator=gen) / math.sqrt(feat.shape[1])
        wpe += 0.3 * feat @ mix


def model_from_onnx(onnx_path: Path) -> tuple[IGPT, dict]:
    """Rebuild the lean torch model from a bundle's model.onnx (and its manifest.json).

    The exporter folded 1/sqrt(head_dim) into the query third of every c_attn weight and
    bias; it is multiplied back here. lm_head is the one MatMul initializer of shape
    [n_embd, 512] (the transposed Linear weight). Returns the model and a provenance dict
    with the max |logit difference| against onnxruntime on two random sequences.
    """
    import onnx
    from onnx import numpy_helper

    manifest = json.loads((onnx_path.parent / "manifest.json").read_text())
    cfg = manifest["model"]
    shape = IGPTShape(
        vocab_size=cfg["vocab_size"],
        n_positions=cfg["n_positions"],
        n_embd=cfg["n_embd"],
        n_layer=cfg["n_layer"],
        n_head=cfg["n_head"],
        n_inner=cfg["n_inner"],
        layer_norm_epsilon=cfg["layer_norm_epsilon"],
        scale_attn_by_inverse_layer_idx=cfg["scale_attn_by_inverse_layer_idx"],
    )
    graph = onnx.load(str(onnx_path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {k[len("lean.") :]: torch.tensor(v.copy()) for k, v in init.items() if "lean." in k}
    heads = [v for v in init.values() if v.shape == (shape.n_embd, shape.vocab_size - 1)]
    if len(heads) != 1:
        raise ValueError(f"expected one lm_head initializer, found {len(heads)}")
    state["lm_head.weight"] = torch.tensor(heads[0].T.copy())
    c, scale = shape.n_embd, math.sqrt(shape.head_dim)
    for i in range(shape.n_layer):
        state[f"transformer.h.{i}.attn.c_attn.weight"][:, :c] *= scale
        state[f"transformer.h.{i}.attn.c_attn.bias"][:c] *= scale
    model = IGPT(shape)
    model.load_state_dict(state, strict=True)
    model.eval()
    provenance = {
        "onnx": str(onnx_path),
        "fingerprint": manifest.get("fingerprint"),
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "max_abs_logit_diff_vs_onnxruntime": _onnx_parity(model, onnx_path, manifest),
    }
    return model, provenance


def _onnx_parity(model: IGPT, onnx_path: Path, manifest: dict) -> float | None:
    """Max |logit difference| of the rebuilt model against onnxruntime (step 0, empty cache)."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a run-time dependency
        return None
    io = manifest.get("io", {})
    if set(io.get("inputs", [])) != {"input_ids", "past_length", *io.get("past", [])}:
        return None  # another graph contract: no parity check here
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, 512, (2, 256))
    ids[:, 0] = SOS
    feeds = {"input_ids": ids.astype(np.int64), "past_length": np.array(0, dtype=np.int64)}
    b, h, d = 2, model.shape.n_head, model.shape.head_dim
    for name in io["past"]:
        dims = (b, h, d, 0) if name.endswith("key") else (b, h, 0, d)
        feeds[name] = np.zeros(dims, np.float32)
    (logits,) = sess.run([io.get("logits", "logits")], feeds)
    with torch.no_grad():
        ref = model(torch.as_tensor(ids)).numpy()
    return float(np.abs(logits - ref).max())


def make_optimizer(model: IGPT, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "wpe" in n]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=lr,
        betas=(0.9, 0.95),
    )


# --------------------------------------------------------------------------- schedule


def lr_at(step: int, schedule: dict) -> float:
    """Linear warm-up, constant peak, cosine cool-down to floor x peak over the last decay_steps."""
    peak, warmup = schedule["peak"], schedule["warmup"]
    if step < warmup:
        return peak * (step + 1) / warmup
    rewarm = schedule.get("rewarm")
    if rewarm and rewarm["start"] <= step < rewarm["start"] + rewarm["steps"]:
        ramp = (step - rewarm["start"] + 1) / rewarm["steps"]
        return ramp * lr_at(step, {k: v for k, v in schedule.items() if k != "rewarm"})
    decay_start = schedule["total_steps"] - schedule["decay_steps"]
    if step < decay_start:
        return peak
    progress = min(1.0, (step - decay_start) / max(1, schedule["decay_steps"]))
    floor = schedule["floor"]
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- data


def with_sos(tokens: torch.Tensor) -> torch.Tensor:
    """Model input: SOS then all pixels but the last; target: all pixels."""
    sos = torch.full((tokens.shape[0], 1), SOS, dtype=torch.long)
    return torch.cat([sos, tokens[:, :-1]], dim=1)


def side_of(tokens: np.ndarray) -> int:
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} tokens per image is not a square")
    return side


def position_ids(side: int, layout: str = GRID) -> torch.Tensor:
    return torch.as_tensor(positions(side, layout))


def batch_size_for(side: int) -> int:
    return max(1, round(TOKENS_PER_BATCH / side**2))


Stream = int | str
"""A batch source: an int is a side of squashed views; a str names another pool
(NATIVE_STREAM: 32x32 crops at the photo's own scale)."""
NATIVE_STREAM = "native_32"


def _stream(key: int | str) -> Stream:
    return int(key) if str(key).isdigit() else str(key)


class Batches:
    """One stream per batch, drawn by token share; a cursor per stream walks a seeded order.

    State (rng state, cursors, epochs) goes into the checkpoint, so a resumed run
    continues with exactly the batches an uninterrupted run would have seen.
    """

    def __init__(
        self, arrays: dict[Stream, np.ndarray], shares: dict[Stream, float], seed: int
    ) -> None:
        self.arrays = {s: a for s, a in arrays.items() if len(a)}
        total = sum(shares.get(s, 0.0) for s in self.arrays)
        # Squashed sides (ints) first, in order, then named streams: a pool without
        # named streams draws exactly the batches it drew before they existed.
        self.sides = sorted(self.arrays, key=lambda s: (isinstance(s, str), str(s).zfill(8)))
        self.probs = np.array([shares.get(s, 0.0) / total for s in self.sides])
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.cursor = {s: 0 for s in self.sides}
        self.epoch = {s: 0 for s in self.sides}
        self._orders: dict[Stream, np.ndarray] = {}

    def _order(self, stream: Stream) -> np.ndarray:
        if stream not in self._orders:
            n = len(self.arrays[stream])
            epoch = self.epoch[stream]
            key = [self.seed, side_of(self.arrays[stream]), epoch]
            if isinstance(stream, str):
                key.append(1)
            rng = np.random.default_rng(key)
            self._orders[stream] = np.arange(n) if epoch == 0 else rng.permutation(n)
        return self._orders[stream]

    def next(self) -> np.ndarray:
        side = self.sides[self.rng.choice(len(self.sides), p=self.probs)]
        n, want = len(self.arrays[side]), batch_size_for(side_of(self.arrays[side]))
        idx = []
        while len(idx) < want:
            take = min(want - len(idx), n - self.cursor[side])
            start = self.cursor[side]
            idx.extend(self._order(side)[start : start + take])
            self.cursor[side] += take
            if self.cursor[side] >= n:
                self.cursor[side] = 0
                self.epoch[side] += 1
                self._orders.pop(side, None)
        return self.arrays[side][np.asarray(idx)]

    def state(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "cursor": dict(self.cursor),
            "epoch": dict(self.epoch),
        }

    def load(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.cursor.update({_stream(k): v for k, v in state["cursor"].items()})
        self.epoch.update({_stream(k): v for k, v in state["epoch"].items()})
        self._orders.clear()


def load_pool(path: Path) -> tuple[dict, dict[int, np.ndarray], dict[str, np.ndarray]]:
    """(spec, training arrays by side, evaluation arrays by name_side) of a pool file."""
    pool = np.load(path)
    spec = json.loads(str(pool["spec"])) if "spec" in pool.files else {}
    train = {}
    for key in pool.files:
        name, _, side = key.rpartition("_")
        if name == "train" and side.isdigit() and pool[key].ndim == 2:
            train[int(side)] = pool[key]
    evals = {}
    for key in pool.files:
        name, _, side = key.rpartition("_")
        if name in EVAL_NAMES and side.isdigit():
            evals[key] = pool[key]
    return spec, train, evals


def load_native_pool(path: Path) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """(spec, training crops, evaluation arrays) of a native-scale pool
    (`export/train_data.py native`)."""
    pool = np.load(path)
    spec = json.loads(str(pool["spec"]))
    return spec, pool["train_native_32"], {"heldout_native_32": pool["heldout_native_32"]}


def ensure_native_pool(path: Path, spec: dict) -> None:
    """Build the native pool a checkpoint was trained on if it is missing."""
    if path.exists():
        return
    from igpt_codec.export.train_data import build_native, default_data_root

    print(f"building missing native pool {path} from the checkpoint's spec", flush=True)
    build_native(
        default_data_root(), path, spec["crops_per_source"], spec["val_crops"], spec["seed"], 1
    )


def ensure_pool(path: Path, spec: dict | None) -> None:
    """Build the pool a checkpoint was trained on if it is missing (same spec, same seed)."""
    if path.exists():
        return
    if not spec:
        raise FileNotFoundError(f"{path} is missing; build it with export/train_data.py pool")
    from igpt_codec.export.train_data import build, default_data_root

    print(f"building missing pool {path} from the checkpoint's spec", flush=True)
    build(default_data_root(), path, spec["views_per_source"], 4, spec["seed"], workers=1)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: IGPT, tokens: np.ndarray, layout: str = GRID, batch_tokens: int = 16384):
    """Mean bits/token (model cross-entropy) of side x side images fed at `layout` positions."""
    was_training = model.training
    model.eval()
    side = side_of(tokens)
    pos = position_ids(side, layout)
    per = max(1, batch_tokens // side**2)
    total, count = 0.0, 0
    for i in range(0, len(tokens), per):
        target = torch.as_tensor(tokens[i : i + per].astype(np.int64))
        logits = model(with_sos(target), pos)
        total += F.cross_entropy(
            logits.reshape(-1, 512), target.reshape(-1), reduction="sum"
        ).item()
        count += target.numel()
    model.train(was_training)
    return total / count / LN2


ROUTINE_EVALS = (
    "heldout_32",
    "heldout_28",
    "heldout_24",
    "heldout_16",
    "heldout_8",
    "unlike_32",
    "unlike_24",
    "unlike_16",
    "unlikefresh_32",
    "heldout_crops_32",
    "heldout_native_32",
)


def routine_eval(model: IGPT, evals: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for key in ROUTINE_EVALS:
        if key in evals:
            arr = evals[key][::4] if key.startswith("heldout_crops") else evals[key]
            out[key] = round(evaluate(model, arr), 5)
    return out


# --------------------------------------------------------------------------- training


def train_step(
    model: IGPT, optimizer: torch.optim.Optimizer, target: torch.Tensor, lr: float
) -> float:
    """One AdamW step on a batch of same-side images at grid positions; returns bits/token."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = model(with_sos(target), position_ids(side_of(target)))
    loss = F.cross_entropy(logits.reshape(-1, 512), target.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item() / LN2


@torch.no_grad()
def update_ema(ema: IGPT, model: IGPT, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)


def save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=False, map_location="cpu")


def restore(ckpt: dict) -> tuple[IGPT, IGPT, torch.optim.AdamW]:
    """Model, EMA model and optimizer of a checkpoint, ready to continue."""
    shape = IGPTShape(**ckpt["shape"])
    model, ema = IGPT(shape), IGPT(shape)
    model.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    ema.eval()
    optimizer = make_optimizer(model, ckpt["schedule"]["peak"], ckpt["weight_decay"])
    optimizer.load_state_dict(ckpt["optimizer"])
    model.train()
    return model, ema, optimizer


def _fresh_state(args: argparse.Namespace, pool_spec: dict) -> dict:
    """A new run: warm start from an ONNX bundle, or colour-aware init of a preset."""
    torch.manual_seed(args.seed)
    if args.init_onnx:
        model, warm = model_from_onnx(args.init_onnx)
        origin = {"warm_start": warm, "optimizer": "fresh AdamW (the bundle has no optimizer)"}
        print(f"warm start from {args.init_onnx}: {json.dumps(warm)}", flush=True)
    else:
        model = IGPT(dataclasses.replace(PRESETS[args.preset], attention_span=args.attention_span))
        colour_aware_init(model, np.load(PALETTE_PATH), args.seed)
        origin = {"init": f"preset {args.preset}, colour-aware init, seed {args.seed}"}
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    schedule = {
        "kind": "warmup-stable-decay",
        "peak": args.lr,
        "warmup": args.warmup,
        "total_steps": args.total_steps,
        "decay_steps": args.decay_steps,
        "floor": 0.1,
    }
    return {
        "format": 2,
        "shape": dict(model.shape.__dict__),
        "model": model.state_dict(),
        "ema": copy.deepcopy(model.state_dict()),
        "ema_decay": args.ema_decay,
        "optimizer": optimizer.state_dict(),
        "weight_decay": args.weight_decay,
        "schedule": schedule,
        "step": 0,
        "tokens_seen": 0,
        "elapsed": 0.0,
        "data": {"pool_spec": pool_spec, "seed": args.seed, "batches": None},
        "history": {"train": [], "eval": []},
        "provenance": {**origin, "sessions": []},
    }


def _native_share(args: argparse.Namespace, state: dict) -> float:
    """The share of native-scale crops in this run: --native-share, else the checkpoint's
    (a resume without the flag continues with the same mix); 0 for none."""
    old = state["data"].get("native")
    if args.native_share is None:
        return old["share"] if old else 0.0
    if not 0 <= args.native_share < 1:
        raise SystemExit(f"--native-share must lie in [0, 1), got {args.native_share}")
    if (old["share"] if old else 0.0) != args.native_share:
        print(f"native-scale share: {old and old['share']} -> {args.native_share}", flush=True)
    return args.native_share


def _adopt_attention_span(args: argparse.Namespace, state: dict) -> None:
    """Resume with a banded attention span (issue 23): the weights are unchanged, only the
    mask narrows, so a full-attention checkpoint fine-tunes into a span model. A span once
    trained is kept: widening or dropping it would silently change what the model saw."""
    span = args.attention_span
    if span is None:
        return
    old = state["shape"].get("attention_span")
    if old is not None and old != span:
        raise SystemExit(f"the checkpoint was trained with attention span {old}, not {span}")
    if old is None:
        print(f"attention span: full -> {span}", flush=True)
        state["shape"] = {**state["shape"], "attention_span": span}


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    if not ckpt_path.exists() and args.resume_from is not None:
        shutil.copyfile(args.resume_from, ckpt_path)
        print(f"seeded {ckpt_path} from {args.resume_from}", flush=True)
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        ensure_pool(args.pool, state["data"]["pool_spec"])
        spec, train_arrays, evals = load_pool(args.pool)
        if spec != state["data"]["pool_spec"]:
            print(f"warning: pool spec {spec} differs from the checkpoint's", flush=True)
        for key in ("total_steps", "decay_steps"):
            value = getattr(args, key)
            if value is not None and value != state["schedule"][key]:
                print(f"schedule {key}: {state['schedule'][key]} -> {value}", flush=True)
                state["schedule"][key] = value
        _adopt_attention_span(args, state)
        if args.rewarm:
            state["schedule"]["rewarm"] = {"start": state["step"], "steps": args.rewarm}
            print(f"re-warm over {args.rewarm} steps from step {state['step']}", flush=True)
        print(f"resumed at step {state['step']}", flush=True)
    else:
        spec, train_arrays, evals = load_pool(args.pool)
        args.total_steps = args.total_steps or 200_000
        args.decay_steps = args.decay_steps if args.decay_steps is not None else 20_000
        state = _fresh_state(args, spec)
    model, ema, optimizer = restore(state)
    shares: dict[Stream, float] = {int(k): v for k, v in (spec.get("token_share") or {}).items()}
    if not shares:
        shares = {s: float(s * s) for s in train_arrays}  # synthetic pools: by size
    native_share = _native_share(args, state)
    if native_share:
        old = state["data"].get("native")
        if old is not None:
            ensure_native_pool(args.native_pool, old["pool_spec"])
        elif not args.native_pool.exists():
            raise SystemExit(
                f"{args.native_pool} is missing; build it with export/train_data.py native"
            )
        native_spec, crops, native_evals = load_native_pool(args.native_pool)
        if old is not None and native_spec != old["pool_spec"]:
            print(f"warning: native pool spec {native_spec} differs", flush=True)
        state["data"]["native"] = {"share": native_share, "pool_spec": native_spec}
        total = sum(shares.values())
        shares = {k: v / total * (1 - native_share) for k, v in shares.items()}
        shares[NATIVE_STREAM] = native_share
        train_arrays = {**train_arrays, NATIVE_STREAM: crops}
        evals = {**evals, **native_evals}
    else:
        state["data"].pop("native", None)
    batches = Batches(train_arrays, shares, state["data"]["seed"])
    if state["data"]["batches"] is not None:
        batches.load(state["data"]["batches"])
    state["provenance"]["sessions"].append(
        {"argv": sys.argv[1:], "started": time.time(), "step": state["step"]}
    )
    history = state["history"]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"shape {model.shape} params {n_params} schedule {state['schedule']}", flush=True)

    stop = {"now": False}

    def on_term(signum, frame):  # finish the step, save, exit
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    session_start = time.time()
    elapsed0 = state["elapsed"]

    def save() -> None:
        state.update(
            model=model.state_dict(),
            ema=ema.state_dict(),
            optimizer=optimizer.state_dict(),
            elapsed=elapsed0 + time.time() - session_start,
        )
        state["data"]["batches"] = batches.state()
        save_atomic(state, ckpt_path)

    def do_eval() -> None:
        entry = {
            "step": state["step"],
            "tokens_seen": state["tokens_seen"],
            "elapsed_s": round(elapsed0 + time.time() - session_start),
            "ema": routine_eval(ema, evals),
            "raw": {k: v for k, v in routine_eval(model, evals).items() if k == "heldout_32"},
        }
        history["eval"].append(entry)
        print("eval " + json.dumps(entry), flush=True)

    if not history["eval"]:
        do_eval()
    t_last, tokens_since, losses, losses32 = time.time(), 0, [], []
    budget = args.minutes * 60
    step_limit = state["schedule"]["total_steps"]
    while state["step"] < step_limit and time.time() - session_start < budget and not stop["now"]:
        if args.max_steps is not None and state["step"] >= args.max_steps:
            break
        target = torch.as_tensor(batches.next().astype(np.int64))
        lr = lr_at(state["step"], state["schedule"])
        bpt = train_step(model, optimizer, target, lr)
        update_ema(ema, model, state["ema_decay"])
        state["step"] += 1
        state["tokens_seen"] += target.numel()
        tokens_since += target.numel()
        losses.append(bpt)
        if target.shape[1] == 1024:
            losses32.append(bpt)
        step = state["step"]
        if step % args.log_every == 0:
            now = time.time()
            entry = {
                "step": step,
                "train_bpt": round(float(np.mean(losses)), 5),
                "train_bpt_32": round(float(np.mean(losses32)), 5) if losses32 else None,
                "lr": lr,
                "tok_s": round(tokens_since / (now - t_last)),
            }
            history["train"].append(entry)
            print("train " + json.dumps(entry), flush=True)
            t_last, tokens_since, losses, losses32 = now, 0, [], []
        if step % args.eval_every == 0:
            do_eval()
        if step % args.save_every == 0 or step % args.eval_every == 0:
            save()
    if history["eval"][-1]["step"] != state["step"]:
        do_eval()
    save()
    (out / "history.json").write_text(json.dumps(summary(state), indent=1) + "\n")
    print(f"stopped at step {state['step']}; checkpoint {ckpt_path}", flush=True)


def summary(state: dict) -> dict:
    """The checkpoint's history and provenance, without tensors: committed beside it."""
    return {
        "shape": state["shape"],
        "params": sum(v.numel() for v in state["model"].values()),
        "step": state["step"],
        "tokens_seen": state["tokens_seen"],
        "elapsed_s": round(state["elapsed"]),
        "schedule": state["schedule"],
        "ema_decay": state["ema_decay"],
        "weight_decay": state["weight_decay"],
        "pool_spec": state["data"]["pool_spec"],
        "native": state["data"].get("native"),
        "provenance": state["provenance"],
        "history": state["history"],
    }


# --------------------------------------------------------------------------- other modes


def publish(args: argparse.Namespace) -> None:
    """Copy the run's checkpoint into the repository and write its history beside it."""
    src = args.out / "checkpoint.pt"
    state = load_checkpoint(src)
    dst: Path = args.checkpoint_file
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    history_path = dst.with_name(dst.stem + "_history.json")
    history_path.write_text(json.dumps(summary(state), indent=1) + "\n")
    print(f"{dst}: step {state['step']}, {dst.stat().st_size / 1e6:.2f} MB; {history_path}")


def write_hf(args: argparse.Namespace) -> None:
    """A transformers checkpoint directory holding the EMA weights (for `cli.py export`)."""
    state = load_checkpoint(args.checkpoint_file)
    shape = IGPTShape(**state["shape"])
    model = IGPT(shape)
    model.load_state_dict(state["ema" if not args.raw else "model"])
    hf = to_transformers(model.eval())
    hf.save_pretrained(args.hf_dir)
    write_preprocessor_config(args.hf_dir, np.load(PALETTE_PATH))
    print(f"wrote {args.hf_dir} from step {state['step']} ({'raw' if args.raw else 'ema'})")


def report(args: argparse.Namespace) -> None:
    """Bits/token tables of one or more models on the pool's held-out sets."""
    torch.set_num_threads(args.threads)
    _, _, evals = load_pool(args.pool)
    models: dict[str, IGPT] = {}
    if args.onnx:
        models["onnx"], _ = model_from_onnx(args.onnx)
    if args.checkpoint_file and args.checkpoint_file.exists() and not args.onnx_only:
        state = load_checkpoint(args.checkpoint_file)
        for which in ("ema", "model"):
            m = IGPT(IGPTShape(**state["shape"]))
            m.load_state_dict(state[which])
            models[f"{which}@{state['step']}"] = m.eval()
    result: dict = {}
    for name, model in models.items():
        rows = {}
        for key in sorted(evals):
            if key.startswith("heldout_crops"):
                continue
            for layout in (GRID, RASTER):
                if layout == RASTER and (name != "onnx" or key.endswith("_32")):
                    continue
                rows[f"{key}/{layout}"] = round(evaluate(model, evals[key], layout), 4)
                print(name, key, layout, rows[f"{key}/{layout}"], flush=True)
        result[name] = rows
    text = json.dumps(result, indent=1)
    if args.report_out:
        args.report_out.write_text(text + "\n")
    print(text)


def plot(args: argparse.Namespace) -> None:
    """Train and validation curves of a history JSON (`publish` writes one) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(args.history.read_text())["history"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    train_rows = [r for r in data["train"] if r.get("train_bpt_32") is not None]
    left.plot([r["step"] for r in data["train"]], [r["train_bpt"] for r in data["train"]], lw=0.6)
    left.plot([r["step"] for r in train_rows], [r["train_bpt_32"] for r in train_rows], lw=0.6)
    left.legend(["train, all sides", "train, side 32"])
    left.set(xlabel="step", ylabel="bits/token", title="training (mean per log interval)")
    for key in sorted(data["eval"][-1]["ema"]):
        right.plot([r["step"] for r in data["eval"]], [r["ema"].get(key) for r in data["eval"]])
        right.annotate(key, (data["eval"][-1]["step"], data["eval"][-1]["ema"][key]), fontsize=7)
    right.set(xlabel="step", ylabel="bits/token", title="validation (EMA weights, grid positions)")
    fig.tight_layout()
    fig.savefig(args.plot_out, dpi=90)
    print(f"wrote {args.plot_out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", nargs="?", default="train", choices=["train", "publish", "hf", "report", "plot"]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--init-onnx", type=Path, help="warm start from a bundle's model.onnx")
    parser.add_argument("--pool", type=Path, default=Path("runs/pool_v2.npz"))
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--resume-from", type=Path, help="checkpoint to seed --out with")
    parser.add_argument("--checkpoint-file", type=Path, default=CHECKPOINT_FILE)
    parser.add_argument(
        "--native-pool",
        type=Path,
        default=Path("runs/native_v1.npz"),
        help="native-scale 32x32 crops (export/train_data.py native)",
    )
    parser.add_argument(
        "--native-share",
        type=float,
        help="share of training tokens from native-scale crops (kept on resume; 0 stops)",
    )
    parser.add_argument(
        "--attention-span",
        type=int,
        help="resume: attend to the last N positions only (a banded mask; kept once set)",
    )
    parser.add_argument("--total-steps", type=int, help="new runs: 200000; resumes may change it")
    parser.add_argument("--decay-steps", type=int, help="new runs: 20000; resumes may change it")
    parser.add_argument("--max-steps", type=int, help="stop this session at this step")
    parser.add_argument("--minutes", type=float, default=1e9, help="this session's time budget")
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--rewarm",
        type=int,
        help="resume: ramp the learning rate up again over this many steps (a checkpoint "
        "that ended its cool-down at the floor continues at a higher rate)",
    )
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--hf-dir", type=Path, default=Path("runs/default/hf"))
    parser.add_argument("--raw", action="store_true", help="hf: raw weights instead of the EMA")
    parser.add_argument("--onnx", type=Path, help="report: a bundle's model.onnx to evaluate")
    parser.add_argument("--onnx-only", action="store_true", help="report: skip the checkpoint")
    parser.add_argument("--report-out", type=Path)
    parser.add_argument(
        "--history", type=Path, default=CHECKPOINT_FILE.with_name("default_model_history.json")
    )
    parser.add_argument("--plot-out", type=Path, default=Path("runs/default_history.png"))
    args = parser.parse_args()
    modes = {"train": train, "publish": publish, "hf": write_hf, "report": report, "plot": plot}
    modes[args.mode](args)


if __name__ == "__main__":
    main()
