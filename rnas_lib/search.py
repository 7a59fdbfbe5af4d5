"""DARTS bilevel search with an optional robustness term (the DSRNA objective).

    min_α  L_val(w*(α), α) − γ·R(w*(α), α)    s.t.  w*(α) = argmin_w L_train(w, α) [− γ_w·R(w, α)]

alternating one step on α (Adam, on the validation half) and one on w (SGD with momentum,
cosine learning rate, gradient clipping, on the training half) per mini-batch.
First order uses w*(α) ≈ w. Second order (DARTS) uses one unrolled step
w' = w − ξ∇_w L_train(w, α) and the finite-difference Hessian-vector product
    ∇²_{α,w} L_train · v ≈ (∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)) / (2r),  w^± = w ± r·v,
with v = ∇_{w'} L_val(w', α) and r = hvp_radius/‖v‖ (DARTS: 0.01).

Methods (``SearchConfig.method``): ``darts`` (no R), ``pcdarts`` (no R, partial channels: PC-DARTS),
``random`` (a sampled genotype, no training), and every robustness term in
``rnas_lib.robustness.TERMS`` (R is switched on after ``warmup_epochs``).

Partial channels (``SearchConfig.partial_channels`` = K, ``rnas_lib.supernet``): each edge computes
on 1/K of its input's channels, with PC-DARTS' edge normalisation β (more architecture parameters,
optimised with α). ``pcdarts`` is ``darts`` with K = 4 by default (PC-DARTS' choice); any method
takes K, e.g. ``method="dsrna_cb", partial_channels=4`` is the DSRNA-CB search in the PC-DARTS
setting. K = 1 (the default of every other method) is plain DARTS.

Each epoch saves one resumable ``checkpoint.pt`` (model, optimisers, every random-number state,
history; written atomically, so a kill mid-save leaves the previous epoch's whole) and
``history.json`` (the progress so far). Only a finished search writes ``genotype.json`` and then,
last, its completion record ``complete.json`` (``rnas_lib.runs``).
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import robustness
from .data import TensorData, batches, dataset_info, load_dataset, search_split
from .devices import model_device, resolve_device
from .display import progress as progress_bar
from .genotypes import Genotype, random_genotype, save_genotype, to_dict
from .runs import (keyed_run_dir, load_checkpoint, mark_complete,
                   require_complete, save_checkpoint, save_json, start_run)
from .ops import DARTS_PRIMITIVES, PRIMITIVES
from .supernet import SearchNetwork
from .tiers import Tier, get_tier

BUILTIN_METHODS = ("darts", "pcdarts", "random")
#: PC-DARTS' channel proportion 1/K, the default of ``pcdarts``
PCDARTS_PARTIAL_CHANNELS = 4
TIER_FIELDS = set(Tier.__dataclass_fields__) - {"name"}


def methods() -> tuple[str, ...]:
    return BUILTIN_METHODS + tuple(robustness.TERMS)


@dataclass
class SearchConfig:
    method: str = "darts"
    epochs: int = 6
    batch_size: int = 64
    lr_w: float = 0.025
    lr_w_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    lr_alpha: float = 3e-4
    alpha_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    order: int = 1
    hvp_radius: float = 0.01  # r·‖v‖ of the finite-difference Hessian-vector product (DARTS: 0.01)
    gamma: float | None = None  # weight of R in the α loss; None: the term's ``default_gamma`` (else 0.01)
    gamma_w: float = 0.0  # weight of R in the w loss (0: R at the architecture level only)
    warmup_epochs: int = 0
    method_options: dict = field(default_factory=dict)
    partial_channels: int | None = None  # K; None: 4 for pcdarts, 1 (plain DARTS) otherwise
    seed: int = 0

    def __post_init__(self):
        if self.method not in methods():
            raise ValueError(f"unknown search method {self.method!r}; allowed: {', '.join(methods())}")
        if self.gamma is None:
            self.gamma = getattr(robustness.TERMS.get(self.method), "default_gamma", 0.01)
        if self.partial_channels is None:
            self.partial_channels = PCDARTS_PARTIAL_CHANNELS if self.method == "pcdarts" else 1
        K = self.partial_channels
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"partial_channels must be a positive integer K (each edge computes on 1/K of the "
                             f"channels; 1 is plain DARTS, PC-DARTS uses 4), got {K!r}")
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 (first-order DARTS) or 2 (unrolled), got {self.order!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr_w", "lr_alpha", "grad_clip", "hvp_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gamma", "gamma_w", "lr_w_min", "weight_decay", "alpha_weight_decay", "momentum"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer ≥ 0, got {self.warmup_epochs!r}")
        if self.method_options and self.method in BUILTIN_METHODS:
            raise ValueError(f"method {self.method!r} takes no method_options, got {self.method_options}")

    def make_term(self):
        """The robustness term R of this method, or None."""
        if self.method in BUILTIN_METHODS:
            return None
        factory = robustness.TERMS[self.method]
        allowed = inspect.signature(factory).parameters
        unknown = set(self.method_options) - set(allowed)
        if unknown:
            raise ValueError(f"method {self.method!r} has no options {sorted(unknown)}; allowed: {', '.join(allowed)}")
        return factory(**self.method_options)


@dataclass
class SearchResult:
    genotype: Genotype
    history: list
    model: SearchNetwork | None
    out_dir: Path | None


def cosine_lr(epoch: int, epochs: int, lr_max: float, lr_min: float) -> float:
    """lr_min + ½(lr_max − lr_min)(1 + cos(π·epoch/epochs))."""
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


@torch.no_grad()
def evaluate(model, data: TensorData, batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in its current mode, on the model's device."""
    loss, correct = 0.0, 0
    for x, y in batches(data, batch_size, device=model_device(model)):
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return loss / len(data), correct / len(data)


class _Searcher:
    def __init__(self, model: SearchNetwork, config: SearchConfig):
        self.model, self.config = model, config
        self.term = config.make_term()
        self.w_opt = torch.optim.SGD(model.weights(), config.lr_w, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
        self.a_opt = torch.optim.Adam(model.arch_parameters(), config.lr_alpha, betas=(0.5, 0.999),
                                      weight_decay=config.alpha_weight_decay)
        self.unrolled = copy.deepcopy(model) if config.order == 2 else None

    def loss(self, model, x, y, gamma, robust):
        """CE(f(x), y) − γ·R(f, x, y); returns (loss, logits, R or None). A term with a
        ``with_logits(model, x, y) -> (logits, R)`` gives the logits of its own forward pass."""
        if robust and gamma > 0 and hasattr(self.term, "with_logits"):
            logits, r = self.term.with_logits(model, x, y)
            return F.cross_entropy(logits, y) - gamma * r, logits, r
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if robust and gamma > 0:
            r = self.term(model, x, y)
            return loss - gamma * r, logits, r
        return loss, logits, None

    def alpha_step(self, xt, yt, xv, yv, robust: bool):
        c, alphas = self.config, self.model.arch_parameters()
        if c.order == 1:
            loss, _, r = self.loss(self.model, xv, yv, c.gamma, robust)
            grads = torch.autograd.grad(loss, alphas)
        else:
            grads, r = self.unrolled_alpha_grads(xt, yt, xv, yv, robust)
        for a, g in zip(alphas, grads):
            a.grad = g
        self.a_opt.step()
        return r

    def unrolled_alpha_grads(self, xt, yt, xv, yv, robust):
        c, model = self.config, self.model
        weights = model.weights()
        eta = self.w_opt.param_groups[0]["lr"]
        # w' = w − η (momentum·buffer + ∇_w L_train + λw), as one SGD step would move it
        loss, _, _ = self.loss(model, xt, yt, c.gamma_w, robust)
        g = torch.autograd.grad(loss, weights)
        unrolled = self.unrolled
        with torch.no_grad():
            for p, q, gp in zip(weights, unrolled.weights(), g):
                buf = self.w_opt.state.get(p, {}).get("momentum_buffer")
                step = gp + c.weight_decay * p + (c.momentum * buf if buf is not None else 0)
                q.copy_(p - eta * step)
            for a, b in zip(model.arch_parameters(), unrolled.arch_parameters()):
                b.copy_(a)
            for b_dst, b_src in zip(unrolled.buffers(), model.buffers()):
                b_dst.copy_(b_src)
        loss_val, _, r = self.loss(unrolled, xv, yv, c.gamma, robust)
        u_w = unrolled.weights()
        n_arch = len(unrolled.arch_parameters())
        grads = torch.autograd.grad(loss_val, unrolled.arch_parameters() + u_w)
        d_alpha, v = grads[:n_arch], grads[n_arch:]
        # finite-difference Hessian-vector product ∇²_{α,w} L_train · v
        radius = c.hvp_radius / torch.cat([t.flatten() for t in v]).norm()
        hv = []
        for sign in (1, -2):
            with torch.no_grad():
                for p, t in zip(weights, v):
                    p.add_(t, alpha=sign * radius.item())
            loss, _, _ = self.loss(model, xt, yt, c.gamma_w, robust)
            hv.append(torch.autograd.grad(loss, model.arch_parameters()))
        with torch.no_grad():
            for p, t in zip(weights, v):
                p.add_(t, alpha=radius.item())
        implicit = [(gp - gn) / (2 * radius) for gp, gn in zip(*hv)]
        return [da - eta * h for da, h in zip(d_alpha, implicit)], r

    def weight_step(self, x, y, robust: bool):
        c, weights = self.config, self.model.weights()
        loss, logits, _ = self.loss(self.model, x, y, c.gamma_w, robust)
        grads = torch.autograd.grad(loss, weights)
        for p, g in zip(weights, grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(weights, c.grad_clip)
        self.w_opt.step()
        return loss.item(), (logits.argmax(1) == y).float().mean().item()


def search(model: SearchNetwork, train_data: TensorData, val_data: TensorData, config: SearchConfig,
           out_dir=None, resume: bool = True, progress: bool = True, run_config: dict | None = None) -> SearchResult:
    """Run the bilevel search of ``config.method`` on ``model``, on the model's device (the data's
    batches are moved there); see the module docstring. The model must have been built with
    ``partial_channels=config.partial_channels``. With ``out_dir``, the run's configuration
    (``run_config``, by default ``asdict(config)``) is stored there, and a folder holding another
    configuration is refused; a finished run in it is loaded, not repeated."""
    if config.method != "random" and model.partial_channels != config.partial_channels:
        raise ValueError(
            f"the configuration asks for partial_channels={config.partial_channels} but the supernet was built "
            f"with partial_channels={model.partial_channels}; build "
            f"SearchNetwork(..., partial_channels={config.partial_channels}) or change the configuration"
        )
    if out_dir is not None:
        default = {"search": asdict(config), **search_space_config(model.primitives)}
        start_run(out_dir, run_config if run_config is not None else default, resume)
    if config.method == "random":
        return _random_search(model, config, out_dir)
    searcher = _Searcher(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    term_generator = getattr(searcher.term, "generator", None)
    if term_generator is not None:
        term_generator.manual_seed(config.seed)
    history, start = [], 0
    ckpt_path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        start, history = _restore(ckpt_path, model, searcher, generator, config)
    device = model_device(model)
    epochs = progress_bar(range(start, config.epochs), desc=f"search {config.method}", disable=not progress,
                          initial=start, total=config.epochs, unit="epoch")
    for epoch in epochs:
        t0 = time.perf_counter()
        lr = cosine_lr(epoch, config.epochs, config.lr_w, config.lr_w_min)
        for group in searcher.w_opt.param_groups:
            group["lr"] = lr
        robust = searcher.term is not None and epoch >= config.warmup_epochs
        model.train()
        losses, accs, rs = [], [], []
        train_batches = batches(train_data, config.batch_size, shuffle=True, generator=generator, device=device)
        val_batches = batches(val_data, config.batch_size, shuffle=True, generator=generator, device=device)
        for (xt, yt), (xv, yv) in zip(train_batches, val_batches):
            r = searcher.alpha_step(xt, yt, xv, yv, robust)
            if r is not None:
                rs.append(r.item())
            loss, acc = searcher.weight_step(xt, yt, robust)
            losses.append(loss)
            accs.append(acc)
        model.eval()
        val_loss, val_acc = evaluate(model, val_data)
        w_normal, w_reduce = model.op_weights()
        record = {
            "epoch": epoch + 1, "lr": lr, "robust": robust,
            "train_loss": sum(losses) / len(losses), "train_acc": sum(accs) / len(accs),
            "val_loss": val_loss, "val_acc": val_acc,
            "robustness": sum(rs) / len(rs) if rs else None,
            "alpha_normal": w_normal.tolist(), "alpha_reduce": w_reduce.tolist(),
            **_edge_record(model),
            "genotype": to_dict(model.genotype()), "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        epochs.set_postfix(val_acc=f"{val_acc:.3f}", train_loss=f"{record['train_loss']:.3f}")
        if out_dir is not None:
            _save(Path(out_dir), model, searcher, generator, config, history)
    if out_dir is not None:
        _finish(Path(out_dir), model.genotype(), config, history)
    return SearchResult(model.genotype(), history, model, Path(out_dir) if out_dir is not None else None)


def alpha_entropy(weights) -> float:
    """Mean over the edges of the normalised entropy of the op weights p = softmax(α) of one cell,
    −Σ_o p_o ln p_o / ln|O|: 1 when every edge is uniform (the initialisation), 0 when each edge
    puts all its weight on one op. ``weights``: (edges, ops), rows summing to 1."""
    p = torch.as_tensor(weights, dtype=torch.float64)
    if p.dim() != 2 or p.shape[1] < 2 or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise ValueError(f"weights must be an (edges, ops) array of rows summing to 1 (softmax(α)), got shape "
                         f"{tuple(p.shape)}")
    return (-(p * p.clamp_min(1e-300).log()).sum(1) / math.log(p.shape[1])).mean().item()


def search_convergence(history) -> dict:
    """Per epoch of a search ``history``: ``entropy_normal`` / ``entropy_reduce`` (``alpha_entropy``)
    and ``changes_to_final``, the choices of the final derived genotype that the epoch's genotype
    lacks (``genotypes.genotype_distance``); ``settled_epochs``, how many last epochs are within
    one choice of the final genotype."""
    from .genotypes import genotype_distance

    if not history:
        raise ValueError("empty search history: run the search for at least one epoch (method 'random' has none)")
    final = history[-1]["genotype"]
    changes = [genotype_distance(h["genotype"], final) for h in history]
    settled = next((k for k, c in enumerate(reversed(changes)) if c > 1), len(changes))
    return {"epoch": [h["epoch"] for h in history],
            "entropy_normal": [alpha_entropy(h["alpha_normal"]) for h in history],
            "entropy_reduce": [alpha_entropy(h["alpha_reduce"]) for h in history],
            "changes_to_final": changes, "settled_epochs": settled}


def _edge_record(model) -> dict:
    """The normalised edge weights β (partial channels only)."""
    b_normal, b_reduce = model.edge_weights()
    if b_normal is None:
        return {}
    return {"beta_normal": b_normal.tolist(), "beta_reduce": b_reduce.tolist()}


def rng_states(*generators: torch.Generator | None) -> dict:
    """Every random-number state a run depends on: the global CPU one, every CUDA device's (when
    there are GPUs), and the given generators' (None for an absent one)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": [g.get_state() if g is not None else None for g in generators]}


def set_rng_states(states: dict, *generators: torch.Generator | None) -> None:
    """Restore what ``rng_states`` saved (the CUDA states only on a machine with as many GPUs)."""
    torch.set_rng_state(states["cpu"])
    if states["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() == len(states["cuda"]):
        torch.cuda.set_rng_state_all(states["cuda"])
    for g, state in zip(generators, states["generators"]):
        if g is not None and state is not None:
            g.set_state(state)


def _save(out_dir, model, searcher, generator, config, history):
    """One checkpoint file holds the whole epoch (written atomically: all or nothing); history.json
    is a readable copy of its history."""
    save_checkpoint({
        "model": model.state_dict(), "w_opt": searcher.w_opt.state_dict(), "a_opt": searcher.a_opt.state_dict(),
        "rng": rng_states(generator, getattr(searcher.term, "generator", None)), "config": asdict(config),
        "history": history,
    }, out_dir / "checkpoint.pt")
    save_json({"config": asdict(config), "history": history}, out_dir / "history.json")


def _finish(out_dir, genotype, config, history):
    """The results of a finished search, then its completion record (last)."""
    save_json({"config": asdict(config), "history": history}, out_dir / "history.json")
    save_genotype(genotype, out_dir / "genotype.json")
    mark_complete(out_dir, {"config": asdict(config), "epochs": len(history), "genotype": to_dict(genotype)})


def _restore(path, model, searcher, generator, config):
    state = load_checkpoint(path)
    missing = {"model", "w_opt", "a_opt", "rng", "config", "history"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a search checkpoint (it lacks {sorted(missing)}); delete it to start over")
    if state["config"] != asdict(config):
        diff = {k: (state["config"].get(k), v) for k, v in asdict(config).items() if state["config"].get(k) != v}
        raise ValueError(
            f"the checkpoint at {path} was written with another configuration (stored, given): {diff}; "
            "use another out_dir, delete the checkpoint, or pass resume=False"
        )
    model.load_state_dict(state["model"])
    searcher.w_opt.load_state_dict(state["w_opt"])
    searcher.a_opt.load_state_dict(state["a_opt"])
    set_rng_states(state["rng"], generator, getattr(searcher.term, "generator", None))
    return len(state["history"]), list(state["history"])


def _random_search(model, config, out_dir):
    genotype = random_genotype(model.steps, model.multiplier, torch.Generator().manual_seed(config.seed))
    if out_dir is not None:
        _finish(Path(out_dir), genotype, config, [])
    return SearchResult(genotype, [], None, Path(out_dir) if out_dir is not None else None)


def run_name(config: SearchConfig) -> str:
    """The method, with ``_pc<K>`` when its partial channels K differ from the method's default
    (e.g. ``dsrna_cb_pc4``; ``pcdarts`` is K = 4)."""
    default = PCDARTS_PARTIAL_CHANNELS if config.method == "pcdarts" else 1
    return config.method if config.partial_channels == default else f"{config.method}_pc{config.partial_channels}"


def search_space_config(primitives) -> dict:
    """{} for DARTS' eight primitives, else {"primitives": names}: a search over registered extra
    primitives is another configuration (another run folder), and DARTS runs keep their keys."""
    names = list(primitives)
    return {} if names == [p.name for p in DARTS_PRIMITIVES] else {"primitives": names}


def search_run_config(tier: Tier, config: SearchConfig) -> dict:
    """The whole configuration that determines a search's result: the search settings, the tier
    fields the search reads (dataset, its size limit, the supernet's shape) and the primitives
    registered beyond DARTS' (see search_space_config)."""
    fields = ("dataset", "search_C", "search_layers", "search_limit", "steps", "multiplier")
    return {"search": asdict(config), "tier": {k: getattr(tier, k) for k in fields},
            **search_space_config(PRIMITIVES)}


def _search_setup(tier, method, seed, config_overrides):
    tier_fields = {k: config_overrides.pop(k) for k in list(config_overrides) if k in TIER_FIELDS}
    t = get_tier(tier, **tier_fields)
    config_overrides.setdefault("epochs", t.search_epochs)
    config_overrides.setdefault("batch_size", t.search_batch_size)
    config_overrides.setdefault("lr_alpha", t.search_lr_alpha)
    return t, SearchConfig(method=method, seed=seed, **config_overrides)


def search_run_dir(tier: str = "smoke", method: str = "darts", seed: int = 0, **config_overrides) -> Path:
    """The run folder ``run_search`` uses for these arguments: runs/<tier>/search/<name>_seed<seed>-<key>/."""
    t, config = _search_setup(tier, method, seed, dict(config_overrides))
    return keyed_run_dir(t.name, "search", f"{run_name(config)}_seed{seed}", search_run_config(t, config))


def finished_genotype(out_dir) -> Genotype:
    """The genotype of the finished search in ``out_dir``; FileNotFoundError if it did not finish."""
    from .genotypes import load_genotype

    require_complete(out_dir)
    return load_genotype(Path(out_dir) / "genotype.json")


def _search_halves(t: Tier, data_root, seed: int) -> tuple[TensorData, TensorData]:
    """The (w, α) halves of the tier's search images, split by ``seed``."""
    return search_split(load_dataset(t.dataset, True, data_root, t.search_limit), seed)


def _fresh_supernet(t: Tier, config: SearchConfig, seed: int, data_root) -> SearchNetwork:
    """The tier's search supernet for ``config``, initialised from ``seed``."""
    info = dataset_info(t.dataset, data_root)
    torch.manual_seed(seed)
    return SearchNetwork(t.search_C, info.num_classes, t.search_layers, t.steps, t.multiplier, info.in_channels,
                         mean=info.mean, std=info.std, partial_channels=config.partial_channels)


def estimate_search_seconds(tier: str = "smoke", method: str = "darts", seed: int = 0, data_root=None,
                            probe_steps: int = 3, device=None, **config_overrides) -> dict:
    """How long ``run_search`` with these arguments takes on this machine, measured rather than
    guessed: ``probe_steps`` search steps (an α step and a w step each, after one warm-up step) on
    a fresh supernet and the run's own batches, times the steps of the whole search
    (epochs × ⌈half / batch⌉; the epochs of a warm-up timed without the robustness term).
    Returns {"seconds", "seconds_per_step", "seconds_per_plain_step", "steps_per_epoch", "epochs"}."""
    if not isinstance(probe_steps, int) or probe_steps < 1:
        raise ValueError(f"probe_steps must be a positive integer, got {probe_steps!r}")
    t, config = _search_setup(tier, method, seed, dict(config_overrides))
    train_half, val_half = _search_halves(t, data_root, seed)
    steps_per_epoch = math.ceil(min(len(train_half), len(val_half)) / config.batch_size)
    if method == "random":
        return {"seconds": 0.0, "seconds_per_step": 0.0, "seconds_per_plain_step": 0.0,
                "steps_per_epoch": steps_per_epoch, "epochs": 0}
    device = resolve_device(device)
    model = _fresh_supernet(t, config, seed, data_root).to(device).train()
    searcher = _Searcher(model, config)
    pairs = list(zip(batches(train_half, config.batch_size, device=device),
                     batches(val_half, config.batch_size, device=device)))

    def per_step(robust: bool) -> float:
        start = None
        for k in range(probe_steps + 1):
            if k == 1:
                start = time.perf_counter()
            (xt, yt), (xv, yv) = pairs[k % len(pairs)]
            searcher.alpha_step(xt, yt, xv, yv, robust)
            searcher.weight_step(xt, yt, robust)
        return (time.perf_counter() - start) / probe_steps

    robust_epochs = config.epochs - min(config.warmup_epochs, config.epochs) if searcher.term is not None else 0
    robust_step = per_step(True) if robust_epochs else 0.0
    plain_step = per_step(False) if robust_epochs < config.epochs else robust_step
    seconds = steps_per_epoch * (robust_epochs * robust_step + (config.epochs - robust_epochs) * plain_step)
    return {"seconds": seconds, "seconds_per_step": robust_step or plain_step, "seconds_per_plain_step": plain_step,
            "steps_per_epoch": steps_per_epoch, "epochs": config.epochs}


def run_search(tier: str = "smoke", method: str = "darts", seed: int = 0, data_root=None, out_dir=None,
               resume: bool = True, progress: bool = True, device=None, **config_overrides) -> SearchResult:
    """Search at a tier's size on its dataset; results in ``runs/<tier>/search/<name>_seed<seed>-<key>/``,
    ``<name>`` from ``run_name`` (the method, and the partial channels K when not its default),
    ``key`` a hash of the whole configuration (``search_run_config``); a finished run there is
    loaded, an interrupted one resumed.

    ``device``: where the search runs (``rnas_lib.devices.resolve_device``: None is the GPU when
    there is one); the returned supernet is on the CPU.

    ``config_overrides`` are SearchConfig fields (epochs, gamma, method_options, …) or tier fields
    (dataset, search_C, search_layers, search_limit, …).
    """
    t, config = _search_setup(tier, method, seed, config_overrides)
    device = resolve_device(device)
    run_config = search_run_config(t, config)
    if out_dir is None:
        out_dir = keyed_run_dir(t.name, "search", f"{run_name(config)}_seed{seed}", run_config)
    train_half, val_half = _search_halves(t, data_root, seed)
    model = _fresh_supernet(t, config, seed, data_root)
    result = search(model.to(device), train_half, val_half, config, out_dir, resume, progress, run_config)
    model.cpu()
    return result
