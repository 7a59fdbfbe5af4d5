"""Training a derived network from scratch (standard or PGD adversarial training), with resumable checkpoints.

SGD with momentum and weight decay, cosine learning rate, gradient clipping, drop-path whose
probability ramps linearly from 0 to ``drop_path_prob`` over the epochs (DARTS' schedule: p_e =
drop_path_prob·e/epochs in epoch e = 0, 1, …). Optional, as DARTS' ``train.py`` (``TrainConfig``):
random crop with zero padding ``crop_padding`` and horizontal flip (``augment``), ``cutout`` (side
in pixels), and the auxiliary head with loss CE + ``auxiliary_weight``·CE_aux (training only).
``RECIPES`` names the default settings a tier trains with: ``"plain"`` (none of the options) and
``"darts"`` (DARTS' CIFAR recipe: lr 0.025 cosine to 0, momentum 0.9, weight decay 3e-4, clipping
5, drop-path 0.2, auxiliary weight 0.4; crop/flip with padding 4 and cutout 16 on CIFAR only —
flipping digits would change their meaning).
A checkpoint stores the genotype and the network's shape next to its weights, so
``load_network(path)`` rebuilds the trained network (loaded with ``weights_only=True``).

Adversarial training (Madry et al. 2018), ``TrainConfig(adversarial={"eps": …, "norm": …, …})``:
    min_w E_(x,y) max_{‖δ‖_p ≤ ε, x+δ ∈ [0,1]ⁿ} CE(f_w(x + δ), y),
the inner max approximated by ``rnas_lib.attacks.pgd`` on every mini-batch (generated with the
network in eval mode: running BatchNorm statistics, no drop path), the SGD step taken on the
adversarial batch only. ``train_acc``/``train_loss`` in the history are then on those examples.

Certified training, ``TrainConfig(certified={"eps": …, "method": "crown-ibp" | "ibp", …})``: the
loss on the worst-case logits that IBP / CROWN-IBP certify over the ball, mixed with the natural
loss, with ε, κ and β ramped over the steps (``rnas_lib.certified_training``); the history records
each epoch's last ε, κ and β.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .attacks import check_norm, pgd
from .augment import augment
from .data import TensorData, batches, dataset_info, load_dataset
from .devices import model_device, resolve_device
from .display import progress as progress_bar
from .genotypes import PUBLISHED, from_dict, get_genotype, to_dict
from .network import Network
from .runs import (is_complete, keyed_run_dir, load_checkpoint, load_json, mark_complete, require_complete, run_dir,
                   save_checkpoint, save_json, start_run)
from .search import (TIER_FIELDS, cosine_lr, evaluate, finished_genotype, methods, rng_states, run_search,
                     search_run_dir, set_rng_states)
from .tiers import Tier, get_tier
from .trainings import network_name, split_name, training_overrides


@dataclass
class TrainConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    drop_path_prob: float = 0.0
    augment: bool = False  # random crop (zero padding crop_padding) and horizontal flip
    crop_padding: int = 4
    cutout: int = 0  # side of the cut-out square in pixels (0: off)
    auxiliary_weight: float = 0.0  # weight of the auxiliary head's loss (0: no auxiliary head)
    seed: int = 0
    #: None (standard training) or PGD settings {"eps", "norm", "steps", "step_size", "random_start"}
    adversarial: dict | None = None
    #: None or certified-training settings (``rnas_lib.certified_training.certified_settings``)
    certified: dict | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {self.drop_path_prob!r}")
        for name in ("crop_padding", "cutout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer ≥ 0 (pixels), got {value!r}")
        if not self.auxiliary_weight >= 0:
            raise ValueError(f"auxiliary_weight must be ≥ 0 (0: no auxiliary head; DARTS: 0.4), "
                             f"got {self.auxiliary_weight!r}")
        if self.adversarial is not None:
            self.adversarial = adversarial_settings(self.adversarial)
        if self.certified is not None:
            from .certified_training import certified_settings

            if self.adversarial is not None:
                raise ValueError("adversarial and certified training exclude each other: give one of them")
            self.certified = certified_settings(self.certified, self.epochs)

    def drop_path_at(self, epoch: int) -> float:
        """Drop-path probability during epoch ``epoch`` (0-based): linear from 0, DARTS' schedule."""
        return self.drop_path_prob * epoch / self.epochs


#: default TrainConfig settings per recipe name (a tier's ``train_recipe``), see the module docstring;
#: ``"cifar"`` holds what the recipe adds on CIFAR datasets only
RECIPES = {
    "plain": {"all": {}, "cifar": {}},
    "darts": {
        "all": dict(lr=0.025, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0, drop_path_prob=0.2,
                    auxiliary_weight=0.4),
        "cifar": dict(augment=True, crop_padding=4, cutout=16),
    },
}


def recipe(name: str, dataset: str) -> dict:
    """The TrainConfig settings of recipe ``name`` for ``dataset``."""
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; allowed: {', '.join(RECIPES)}")
    return {**RECIPES[name]["all"], **(RECIPES[name]["cifar"] if dataset.startswith("cifar") else {})}


ADVERSARIAL_DEFAULTS = {"norm": "inf", "steps": 7, "step_size": None, "random_start": True}


def adversarial_settings(settings: dict) -> dict:
    """The full PGD settings of adversarial training: eps (required), norm, steps, step_size, random_start."""
    if not isinstance(settings, dict) or "eps" not in settings:
        raise ValueError(f"adversarial must be None or a dict with at least 'eps', e.g. {{'eps': 0.1, 'norm': 'inf'}}, "
                         f"got {settings!r}")
    unknown = set(settings) - set(ADVERSARIAL_DEFAULTS) - {"eps"}
    if unknown:
        raise ValueError(f"adversarial has no settings {sorted(unknown)}; allowed: eps, {', '.join(ADVERSARIAL_DEFAULTS)}")
    full = {**ADVERSARIAL_DEFAULTS, **settings}
    full["norm"] = check_norm(full["norm"])
    if isinstance(full["eps"], bool) or not isinstance(full["eps"], (int, float)) or not 0 < full["eps"] < float("inf"):
        raise ValueError(f"adversarial eps must be a number > 0 (pixel units), got {full['eps']!r}")
    if isinstance(full["steps"], bool) or not isinstance(full["steps"], int) or full["steps"] < 1:
        raise ValueError(f"adversarial steps must be an integer ≥ 1, got {full['steps']!r}")
    if full["step_size"] is not None and not (isinstance(full["step_size"], (int, float)) and full["step_size"] > 0):
        raise ValueError(f"adversarial step_size must be > 0 or None (2.5·eps/steps), got {full['step_size']!r}")
    full["eps"] = float(full["eps"])
    full["random_start"] = bool(full["random_start"])
    return full


@dataclass
class TrainResult:
    model: Network
    history: list
    test_acc: float
    out_dir: Path | None


def network_spec(model: Network) -> dict:
    """What ``load_network`` needs to rebuild ``model``."""
    spec = {
        "genotype": to_dict(model.genotype), "C": model.C, "num_classes": model.num_classes,
        "layers": model.layers, "in_channels": model.in_channels,
        "mean": model.normalize.mean.flatten().tolist(), "std": model.normalize.std.flatten().tolist(),
    }
    return spec | ({"auxiliary": True} if model.auxiliary else {})


def load_network(path) -> Network:
    """The trained network saved by ``train_network`` at ``path`` (a checkpoint.pt), in eval mode;
    in a run folder, only once the run has finished (FileNotFoundError otherwise)."""
    if (Path(path).parent / "config.json").exists():
        require_complete(Path(path).parent)
    state = load_checkpoint(path)
    if "spec" not in state or "model" not in state:
        raise ValueError(f"{path} is not a trained-network checkpoint (no 'spec'); it was not written by train_network")
    spec = dict(state["spec"])
    try:
        model = Network(from_dict(spec.pop("genotype")), **spec)
        model.load_state_dict(state["model"])
    except (TypeError, KeyError, RuntimeError) as err:
        raise ValueError(f"the checkpoint {path} does not describe a network this version can build "
                         f"({type(err).__name__}: {str(err).splitlines()[0]}); retrain it") from None
    return model.eval()


def train_network(model: Network, train_data: TensorData, test_data: TensorData, config: TrainConfig,
                  out_dir=None, resume: bool = True, progress: bool = True, run_config: dict | None = None) -> TrainResult:
    """Train ``model`` on ``train_data``, on the model's device (the batches are moved there);
    record test accuracy after every epoch. With ``out_dir``, the run's configuration (``run_config``,
    by default the training settings and the network's spec) is stored there and a folder of another
    configuration is refused; every epoch saves one checkpoint (atomically), and the completion
    record ``complete.json`` is written last."""
    if config.auxiliary_weight > 0 and model.auxiliary_head is None:
        raise ValueError(f"auxiliary_weight={config.auxiliary_weight} needs a network with an auxiliary head: "
                         "build it with Network(..., auxiliary=True), or set auxiliary_weight=0")
    if out_dir is not None:
        start_run(out_dir, run_config if run_config is not None else
                  {"train": asdict(config), "network": network_spec(model)}, resume)
    opt = torch.optim.SGD(model.parameters(), config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    history, start = [], 0
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if resume and ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        missing = {"model", "opt", "spec", "config", "history", "rng"} - set(state)
        if missing:
            raise ValueError(f"{ckpt} is not a training checkpoint (it lacks {sorted(missing)}); delete it to start over")
        if state["config"] != asdict(config) or state["spec"] != network_spec(model):
            raise ValueError(f"the checkpoint at {ckpt} belongs to another configuration or network; "
                             "use another out_dir, delete it, or pass resume=False")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        set_rng_states(state["rng"], generator)
        history, start = list(state["history"]), len(state["history"])
    epochs = progress_bar(range(start, config.epochs), desc="train", disable=not progress, initial=start,
                          total=config.epochs, unit="epoch")
    schedule = None
    if config.certified is not None:
        from .certified_training import CertifiedSchedule, certified_loss

        schedule = CertifiedSchedule(config.certified, math.ceil(len(train_data) / config.batch_size))
    for epoch in epochs:
        t0 = time.perf_counter()
        lr = cosine_lr(epoch, config.epochs, config.lr, config.lr_min)
        for group in opt.param_groups:
            group["lr"] = lr
        model.drop_path_prob = config.drop_path_at(epoch)
        model.train()
        total, correct, loss_sum, ramp = 0, 0, 0.0, {}
        for i, (x, y) in enumerate(batches(train_data, config.batch_size, shuffle=True, generator=generator,
                                           device=model_device(model))):
            x = augment(x, config.crop_padding if config.augment else 0, config.augment, config.cutout,
                        model.normalize.mean.flatten(), generator)
            if config.adversarial is not None:
                x = pgd(model, x, y, **config.adversarial)
            loss, logits = training_loss(model, x, y, config.auxiliary_weight)
            if schedule is not None:
                eps, kappa, beta = schedule.at(epoch * schedule.steps_per_epoch + i)
                ramp = {"eps": eps, "kappa": kappa, "beta": beta}
                loss = certified_loss(model, x, y, loss, eps, config.certified["norm"], config.certified["method"],
                                      kappa, beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            total += len(y)
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * len(y)
        model.eval()
        test_loss, test_acc = evaluate(model, test_data)
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / total, "train_acc": correct / total,
                        "test_loss": test_loss, "test_acc": test_acc, "seconds": time.perf_counter() - t0,
                        **({"certified": ramp} if ramp else {})})
        epochs.set_postfix(test_acc=f"{test_acc:.3f}")
        if out_dir is not None:
            save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "spec": network_spec(model),
                             "config": asdict(config), "history": history, "rng": rng_states(generator)},
                            Path(out_dir) / "checkpoint.pt")
            save_json({"config": asdict(config), "spec": network_spec(model), "history": history},
                      Path(out_dir) / "history.json")
    model.eval()
    if out_dir is not None:
        mark_complete(out_dir, {"config": asdict(config), "spec": network_spec(model), "epochs": len(history),
                                "test_acc": history[-1]["test_acc"] if history else None})
    return TrainResult(model, history, history[-1]["test_acc"] if history else float("nan"),
                       Path(out_dir) if out_dir is not None else None)


def training_loss(model: Network, x, y, auxiliary_weight: float = 0.0):
    """(CE(f(x), y) + auxiliary_weight·CE(f_aux(x), y), logits); the auxiliary term only when its
    weight is > 0 (DARTS' train.py)."""
    logits, logits_aux = model.forward_with_auxiliary(x, auxiliary=auxiliary_weight > 0)
    loss = F.cross_entropy(logits, y)
    if logits_aux is not None:
        loss = loss + auxiliary_weight * F.cross_entropy(logits_aux, y)
    return loss, logits


def evaluate_accuracy(model, data: TensorData, batch_size: int = 256) -> float:
    """Clean accuracy of ``model`` (in eval mode) on ``data``."""
    model.eval()
    return evaluate(model, data, batch_size)[1]


def build_network(genotype, tier: Tier | str = "smoke", data_root=None, **network_kwargs) -> Network:
    """The final network of a tier for ``genotype`` (name, path, Genotype), sized for the tier's dataset."""
    t = get_tier(tier) if isinstance(tier, str) else tier
    info = dataset_info(t.dataset, data_root)
    return Network(get_genotype(genotype), network_kwargs.pop("C", t.train_C), info.num_classes,
                   network_kwargs.pop("layers", t.train_layers), info.in_channels, mean=info.mean, std=info.std,
                   **network_kwargs)


def run_training(genotype, tier: str = "smoke", seed: int = 0, name: str | None = None, data_root=None,
                 out_dir=None, resume: bool = True, progress: bool = True, device=None,
                 **config_overrides) -> TrainResult:
    """Train ``genotype``'s network at a tier's size; results in ``runs/<tier>/train/<name>_seed<seed>-<key>/``,
    ``key`` a hash of the whole configuration (training settings, network, dataset and its limits).

    ``device``: where it trains (``rnas_lib.devices.resolve_device``: None is the GPU when there is
    one); the returned network is on the CPU, in eval mode.

    ``config_overrides`` are TrainConfig fields (epochs, lr, …) or tier fields (dataset, train_C,
    train_layers, train_limit, test_limit, train_recipe, …), as in ``rnas_lib.search.run_search``.
    TrainConfig fields not given come from the tier's recipe (``recipe``), then TrainConfig's defaults.
    """
    tier_fields = {k: config_overrides.pop(k) for k in list(config_overrides) if k in TIER_FIELDS}
    t = get_tier(tier, **tier_fields)
    config_overrides.setdefault("epochs", t.train_epochs)
    config_overrides.setdefault("batch_size", t.train_batch_size)
    config_overrides = {**recipe(t.train_recipe, t.dataset), **config_overrides}
    config = TrainConfig(seed=seed, **config_overrides)
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = build_network(genotype, t, data_root, auxiliary=config.auxiliary_weight > 0)
    run_config = {"train": asdict(config), "network": network_spec(model),
                  "tier": {k: getattr(t, k) for k in ("dataset", "train_limit", "test_limit")}}
    if out_dir is None:
        label = name or (genotype if isinstance(genotype, str) and not genotype.endswith(".json") else "custom")
        out_dir = keyed_run_dir(t.name, "train", f"{label}_seed{seed}", run_config)
    train = load_dataset(t.dataset, True, data_root, t.train_limit)
    test = load_dataset(t.dataset, False, data_root, t.test_limit)
    result = train_network(model.to(device), train, test, config, out_dir, resume, progress, run_config)
    model.cpu()
    return result


#: at most this many training images for the demo network
DEMO_TRAIN_LIMIT = 10_000


def demo_network(tier: str = "smoke", seed: int = 0, data_root=None, epochs: int = 3, dataset: str | None = None,
                 C: int | None = None, layers: int | None = None, train_limit: int | None = None,
                 progress: bool = True) -> TrainResult:
    """The workbook's demo network: the published DARTS_V2 cell trained briefly, sized for what it
    demonstrates (a threat model, bounds, Jacobians) rather than as the tier's final network —
    ``C`` channels and ``layers`` cells of the tier's *search* supernet (smoke 4 and 3, tutorial 8
    and 5) on at most ``DEMO_TRAIN_LIMIT`` training images, ``epochs`` epochs. Its run folder is
    keyed by that configuration, so notebooks 01, 03 and 04 train it once and then load it."""
    t = get_tier(tier, **({"dataset": dataset} if dataset else {}))
    limit = train_limit or min(t.train_limit or DEMO_TRAIN_LIMIT, DEMO_TRAIN_LIMIT)
    return run_training("DARTS_V2", tier, seed, name="demo", data_root=data_root, progress=progress, epochs=epochs,
                        train_C=C or t.search_C, train_layers=layers or t.search_layers, train_limit=limit,
                        **({"dataset": dataset} if dataset else {}))


def trained_model(arch: str, tier: str = "smoke", seed: int = 0, data_root=None, progress: bool = True,
                  device=None, search_overrides: dict | None = None, training: str = "standard",
                  **overrides) -> TrainResult:
    """The trained network of ``arch`` at a tier, as the evaluation notebooks need it.

    training: the regime (``rnas_lib.trainings``: standard, pgd, certified), whose settings
    ``overrides`` may change.

    arch: a published genotype ("DARTS_V2", …), a genotype .json path, or a search method ("darts",
    "dsrna_cb", …), whose genotype is that of the finished search at the tier's budget, changed by
    ``search_overrides`` (e.g. {"epochs": 6}; ``search_run_dir``; searched, or an interrupted
    search resumed, first when not finished).
    Trained by ``run_training`` under the name
    ``arch`` (a finished run with the same configuration is reused, not retrained).
    """
    if str(arch).endswith(".json") and (Path(arch).parent / "config.json").exists():
        require_complete(Path(arch).parent)  # a search's genotype: only a finished search has one
    if arch in PUBLISHED or str(arch).endswith(".json"):
        genotype, name = arch, (arch if arch in PUBLISHED else Path(arch).stem)
    elif arch in methods():
        searched = {**{k: v for k, v in overrides.items() if k in TIER_FIELDS}, **(search_overrides or {})}
        folder = search_run_dir(tier, arch, seed, **searched)
        genotype = finished_genotype(folder) if is_complete(folder) else run_search(
            tier, arch, seed, data_root=data_root, progress=progress, device=device, **searched).genotype
        name = arch
    else:
        raise ValueError(f"unknown architecture {arch!r}; give a published genotype ({', '.join(PUBLISHED)}), "
                         f"a genotype .json path, or a search method ({', '.join(methods())})")
    tier_fields = {k: v for k, v in overrides.items() if k in TIER_FIELDS}
    overrides = {**training_overrides(training, tier, overrides.get("epochs"), **tier_fields), **overrides}
    return run_training(genotype, tier, seed, name=network_name(name, training), data_root=data_root,
                        progress=progress, device=device, **overrides)


# ----------------------------------------------------------------------------- the 06 → 07/08 chain
def retrain_record_path(tier: str, name: str, seed: int) -> Path:
    """``runs/<tier>/retrain/<name>_seed<seed>.json``: which run notebook 06 trained under ``name``."""
    return run_dir(tier, "retrain") / f"{name}_seed{seed}.json"


def save_retrain_record(result: TrainResult, arch: str, tier: str, seed: int, name: str | None = None,
                        overrides: dict | None = None, search_overrides: dict | None = None) -> Path:
    """Record that ``result`` is the training of ``arch`` (what ``trained_model`` accepts: a search
    method, a published genotype or a genotype .json path) at ``tier`` and ``seed`` with the
    ``overrides`` (TrainConfig and tier fields) it was trained with and, for a search method, the
    ``search_overrides`` its cell was searched with, so that ``retrained_model`` finds the same run."""
    if result.out_dir is None or not is_complete(result.out_dir):
        raise ValueError("only a finished training run in a run folder can be recorded; train it with run_training")
    name = name or str(arch)
    return save_json({"arch": str(arch), "name": name, "seed": seed, "overrides": dict(overrides or {}),
                      "search_overrides": dict(search_overrides or {}), "run": result.out_dir.name,
                      "test_acc": result.test_acc}, retrain_record_path(tier, name, seed))


def retrained_names(tier: str, seed: int) -> list[str]:
    """The names notebook 06 has recorded at ``tier`` for ``seed``, oldest first."""
    paths = sorted(run_dir(tier, "retrain").glob(f"*_seed{seed}.json"), key=lambda p: p.stat().st_mtime)
    return [load_json(p)["name"] for p in paths]


def retrained_model(name: str, tier: str = "smoke", seed: int = 0, data_root=None, progress: bool = True,
                    device=None) -> tuple[TrainResult, dict | None]:
    """(the trained network of ``name``, 06's record or None): the run notebook 06 recorded under
    ``name`` (same genotype source and settings, so the finished run is loaded, not retrained), or,
    without a record, ``trained_model`` of its label and regime (``trainings.split_name``) at the tier's defaults."""
    path = retrain_record_path(tier, name, seed)
    if not path.exists():
        label, training = split_name(name)
        return trained_model(label, tier, seed, data_root, progress, device, training=training), None
    record = load_json(path)
    result = trained_model(record["arch"], tier, seed, data_root, progress, device,
                           search_overrides=record.get("search_overrides"), training=split_name(record["name"])[1],
                           **record["overrides"])
    if result.out_dir.name != record["run"]:
        raise ValueError(f"{path} names the run {record['run']}, but its settings now give {result.out_dir.name}: "
                         "re-run notebook 06 (or delete the record to use the tier's defaults)")
    return result, record
