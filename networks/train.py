"""The training loop of the regressor: ``diffface train DATASET --out RUN``.

One call trains (or resumes) a run folder::

    RUN/config.yaml               the resolved TrainConfig
    RUN/checkpoints/last.pt       weights + optimizer, scheduler and RNG states (every checkpoint_every steps)
    RUN/model.pt                  the final network alone (load_checkpoint / diffface predict)
    RUN/metrics.jsonl             one line per validation
    RUN/tensorboard/              losses per term, learning rate, validation d / AUC / mm, rendered overlays

A re-run into RUN resumes from ``last.pt`` and reproduces the uninterrupted run exactly: the data a
step sees depends only on the step (:mod:`~diffface.networks.data`) and every state is restored. It is
refused, before anything is written, when the dataset (:func:`~diffface.data.format.dataset_fingerprint`)
or a setting outside :data:`~diffface.networks.config.RESUME_MAY_CHANGE` differs from the checkpoint's:
``steps`` may grow to extend a run, logging, validation and checkpoint intervals, device and threads may
change; loss, learning rates, batch size, width, seed, augmentation and the rest may not.
Under ``torchrun`` each of W ranks trains on 1/W of every global batch; BatchNorm statistics and
gradients are pooled over ranks, so the result equals one process with the same global batch (up to
rounding).

With ``TrainConfig.unlabeled`` every step also draws a batch of unlabelled photos
(:mod:`~diffface.networks.unlabeled`) in its own step-indexed order, runs the network on it and adds
``photometric_weight`` times its photometric loss (the term ``photometric_unlabeled``); the labelled
batch's terms are unchanged. Its order and augmentation depend only on the step and seed, so resume stays
exact, and ranks shard it like the labelled batch. (A photometric term divides by the compared
vertices of the global batch, so W ranks match one process to rounding with it too.)
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import torch

from diffface.data.format import FaceDataset, dataset_fingerprint, read_info
from diffface.morphable_model import MorphableModel, load_morphable_model
from diffface.params import ParamNormalizer
from diffface.threads import torch_threads

from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .config import RESUME_MAY_CHANGE, TrainConfig, resume_conflicts
from .data import AugmentedItems, StepBatchSampler, parameter_statistics
from .distributed import convert_batchnorm, init_process_group, world_from_env
from .losses import VertexProjectionLoss, mse_parameter_loss
from .predictor import FaceRegressor, ModelIdentity
from .registry import create_model
from .validation import validate
from diffface.data.augment import AugmentConfig, Augmenter
from .unlabeled import unlabeled_seed

CONFIG_NAME = "config.yaml"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
FINAL_MODEL = "model.pt"
METRICS_NAME = "metrics.jsonl"


def resolve_morphable_model(spec: str, dataset: str | Path) -> tuple[MorphableModel, str]:
    """The dataset's morphable model: ``"auto"`` means ``builtin`` when the dataset was built with it; the
    fingerprint must match the dataset's. Returns ``(model, spec)``."""
    info = read_info(dataset)
    if spec == "auto":
        if info.model_name != "builtin":
            raise ValueError(f"{dataset}: built with morphable model {info.model_name!r}; pass its file with "
                             f"--model (or model: in the config)")
        spec = "builtin"
    model = load_morphable_model(spec)
    if model.fingerprint != info.model_fingerprint:
        raise ValueError(f"morphable model {spec!r} (fingerprint {model.fingerprint}) is not the one {dataset} was "
                         f"built with ({info.model_name}, fingerprint {info.model_fingerprint})")
    return model, str(spec)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier of ``step``: 1, then ``lr_final / lr`` from ``config.lr_drop_step`` on."""
    if step < config.lr_drop_step or config.lr == 0:
        return 1.0
    return config.lr_final / config.lr


def make_augmenter(config: TrainConfig):
    """:class:`diffface.data.augment.Augmenter` from ``augment_options``, or None when ``augment`` is off."""
    if not config.augment:
        return None

    return Augmenter(AugmentConfig.from_dict(config.augment_options))


def memory_format(config: TrainConfig) -> torch.memory_format:
    """The memory format training runs the network and its input batches in (``TrainConfig.channels_last``)."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


class _Run:
    """The state of one training process (rank); see :func:`train`."""

    def __init__(self, dataset: Path, out: Path, config: TrainConfig):
        self.dataset, self.out, self.config = dataset, out, config
        self.rank, self.world, local_rank = world_from_env()
        device = torch.device(config.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
        self.device = device
        self.started_group = init_process_group(self.world, device)
        self.is_main = self.rank == 0

    def setup(self) -> None:
        config, info = self.config, read_info(self.dataset)
        self.dataset_record = {"path": str(self.dataset.resolve()), "fingerprint": dataset_fingerprint(self.dataset)}
        previous = self.previous_run()  # refused before the heavy work and before config.yaml is rewritten
        self.model, spec = resolve_morphable_model(config.model, self.dataset)
        self.model = self.model.to(self.device)
        self.layout = self.model.layout
        if info.param_names != self.layout.names():
            raise ValueError(f"{self.dataset}: parameter names do not match the layout of {spec!r}")
        needs_ground_truth = config.loss == "2d3d"
        self.train_set = FaceDataset(self.dataset, "train", load_ground_truth=needs_ground_truth,
                                     preload=config.preload)
        self.val_set = FaceDataset(self.dataset, "val", preload=config.preload)
        self.augmenter = make_augmenter(config)
        normalizer = parameter_statistics(self.dataset, "train")
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        network = create_model(config.network, width=config.width, num_outputs=self.layout.network_size,
                               input_size=info.crop_size)
        self.network_config = {"width": config.width, "num_outputs": self.layout.network_size,
                               "input_size": info.crop_size}
        if config.init:
            normalizer = self.initial_weights(network, normalizer)
        elif config.zero_init_head:
            torch.nn.init.zeros_(network.fc.weight)
            torch.nn.init.zeros_(network.fc.bias)
        network = convert_batchnorm(network, self.device).to(self.device)
        network = network.to(memory_format=memory_format(config))
        self.regressor = FaceRegressor(network, normalizer, self.layout,
                                       ModelIdentity(self.model.name, self.model.fingerprint, spec),
                                       config.network, self.network_config, info.crop_size).to(self.device)
        self.trained = network
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.trained = DistributedDataParallel(network, device_ids=[self.device.index]
                                                   if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.vertex_loss = VertexProjectionLoss(self.model, config.norm, config.weight_3d, config.weight_2d,
                                                config.loss_vertices, config.seed).to(self.device)
        self.photometric = None
        if config.photometric_weight > 0:
            from .photometric import PhotometricLoss

            self.photometric = PhotometricLoss(self.model, num_vertices=config.loss_vertices or 2000,
                                               seed=config.seed).to(self.device)
        self.unlabeled_set = None
        if config.unlabeled:
            from .unlabeled import UnlabeledPhotos

            self.unlabeled_set = UnlabeledPhotos(config.unlabeled, info.crop_size)
        self.step = 0
        self.seconds_trained = 0.0  # wall-clock seconds of the run before this process (resume)
        if previous is not None:
            self.resume(previous)

    def initial_weights(self, network: torch.nn.Module, normalizer: ParamNormalizer) -> ParamNormalizer:
        """Load ``config.init``'s weights into ``network``; returns its parameter statistics (the network's
        outputs are normalised by them, so they replace the dataset's). Refused, naming the checkpoint, when it
        holds another network, input size or morphable model."""
        path = self.config.init
        data = read_checkpoint(path, "cpu")
        wanted = {"name": self.config.network, "config": self.network_config}
        if {"name": data["network"]["name"], "config": dict(data["network"]["config"])} != wanted:
            raise ValueError(f"init checkpoint {path}: holds network {data['network']['name']} "
                             f"{dict(data['network']['config'])}, this run trains {wanted['name']} {wanted['config']}")
        if data["morphable_model"]["fingerprint"] != self.model.fingerprint:
            raise ValueError(f"init checkpoint {path}: trained for morphable model "
                             f"{data['morphable_model']['name']!r}, not this dataset's {self.model.name!r}")
        network.load_state_dict(data["state_dict"])
        return ParamNormalizer(data["normalizer"]["mean"].float(), data["normalizer"]["std"].float())

    # -- checkpoints ------------------------------------------------------------------------------
    def training_state(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "seconds": self.elapsed()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self, final: bool = False) -> None:
        if not self.is_main:
            return
        config = self.config.to_dict()
        save_checkpoint(self.out / LAST_CHECKPOINT, self.regressor, self.step, config, self.training_state(),
                        self.dataset_record)
        if final:
            save_checkpoint(self.out / FINAL_MODEL, self.regressor, self.step, config, dataset=self.dataset_record)

    def previous_run(self) -> dict | None:
        """The checkpoint a re-run resumes from (None: a new run); refused with one line naming what differs
        when it was trained on another dataset or with other settings than :data:`RESUME_MAY_CHANGE`."""
        path = self.out / LAST_CHECKPOINT
        if not path.is_file():
            return None
        data = read_checkpoint(path, self.device)
        if data.get("training_state") is None:
            raise ValueError(f"{path}: holds no training state to resume from")
        differ = []
        recorded = data.get("dataset")  # absent from checkpoints written before it was recorded
        if isinstance(recorded, dict) and recorded.get("fingerprint") != self.dataset_record["fingerprint"]:
            differ.append(f"dataset {recorded.get('path')} rebuilt since (other items, splits or fits)"
                          if recorded.get("path") == self.dataset_record["path"]
                          else f"dataset {recorded.get('path')} -> {self.dataset_record['path']}")
        if isinstance(data.get("train_config"), dict):
            differ += [f"{name} {old!r} -> {new!r}"
                       for name, (old, new) in resume_conflicts(data["train_config"], self.config).items()]
        if differ:
            changes = ", ".join(differ)
            raise ValueError(f"{self.out} holds a run trained with other settings ({changes}; its settings are in "
                             f"{self.out / CONFIG_NAME}); resume with the same ones or use a new --out (a resume may "
                             f"change only {', '.join(RESUME_MAY_CHANGE)})")
        return data

    def resume(self, data: dict) -> None:
        path = self.out / LAST_CHECKPOINT
        if data["morphable_model"]["fingerprint"] != self.model.fingerprint:
            raise ValueError(f"{path}: trained for another morphable model than {self.dataset}'s")
        try:
            self.regressor.network.load_state_dict(data["state_dict"])
        except RuntimeError as exc:  # a checkpoint without its settings: torch lists every tensor, one a line
            raise CheckpointError(f"{path}: its weights do not fit this network "
                                  f"({str(exc).strip().splitlines()[0]})") from exc
        self.regressor.normalizer.mean.copy_(data["normalizer"]["mean"])
        self.regressor.normalizer.std.copy_(data["normalizer"]["std"])
        state = data["training_state"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.step = int(data["step"])
        self.seconds_trained = float(state.get("seconds", 0.0))

    # -- one step -----------------------------------------------------------------------------------
    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        config = self.config
        images = self.as_input(batch["image"])
        target = batch["params"].to(self.device, non_blocking=True)
        predicted = self.trained(images)
        normalizer = self.regressor.normalizer
        terms: dict[str, torch.Tensor] = {}
        total = predicted.new_zeros(())
        mse_weight = 1.0 if config.loss == "mse" else config.weight_mse
        if mse_weight > 0:
            terms["mse"] = mse_parameter_loss(predicted, normalizer.normalize(target))
            total = total + mse_weight * terms["mse"]
        params = normalizer.denormalize(predicted)
        if config.loss == "2d3d":
            vertex_terms = self.vertex_loss(params, batch["vertices"].to(self.device),
                                            batch["projections"].to(self.device))
            terms["loss_3d"], terms["loss_2d"] = vertex_terms["loss_3d"], vertex_terms["loss_2d"]
            total = total + vertex_terms["total"]
        if self.photometric is not None:
            terms["photometric"] = self.photometric(params, images)
            total = total + config.photometric_weight * terms["photometric"]
        terms["total"] = total
        return terms

    def as_input(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of crops on the device, in the network's memory format."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=memory_format(self.config))

    def loader(self):
        config = self.config
        items = AugmentedItems(self.train_set, self.augmenter, config.seed)
        sampler = StepBatchSampler(len(self.train_set), config.batch_size, config.seed, self.step, config.steps,
                                   self.rank, self.world)
        return torch.utils.data.DataLoader(items, batch_sampler=sampler, num_workers=config.num_workers)

    def unlabeled_loader(self):
        """This rank's shard of each step's unlabelled batch, step-indexed like :meth:`loader` (own seed)."""
        config = self.config
        seed = unlabeled_seed(config.seed)
        items = AugmentedItems(self.unlabeled_set, self.augmenter, seed)
        sampler = StepBatchSampler(len(self.unlabeled_set), config.unlabeled_batch_size or config.batch_size, seed,
                                   self.step, config.steps, self.rank, self.world)
        return torch.utils.data.DataLoader(items, batch_sampler=sampler, num_workers=config.num_workers)

    def batches(self):
        """``(labelled batch, unlabelled batch or None)`` per step."""
        unlabeled = self.unlabeled_loader() if self.unlabeled_set is not None else itertools.repeat(None)
        return zip(self.loader(), unlabeled)

    def add_unlabeled_term(self, terms: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        """``terms`` with ``photometric_unlabeled``, the photometric loss of the prediction on this rank's
        unlabelled shard, added (and weighted into ``total``)."""
        images = self.as_input(batch["image"])
        params = self.regressor.normalizer.denormalize(self.trained(images))
        term = self.photometric(params, images)
        return {**terms, "photometric_unlabeled": term, "total": terms["total"] + self.config.photometric_weight * term}

    def val_loader(self):
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.config.batch_size,
                                           num_workers=self.config.num_workers)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, stop_at_step: int | None = None) -> dict:
        config = self.config
        writer = None
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            config.to_yaml(self.out / CONFIG_NAME)
            if config.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step)
        start_step, start_time = self.step, time.perf_counter()
        self.start_time = start_time
        last_terms, last_val = {}, None
        self.trained.train()
        for batch, unlabeled in self.batches():
            terms = self.losses(batch)
            if unlabeled is not None:
                terms = self.add_unlabeled_term(terms, unlabeled)
            self.optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            self.optimizer.step()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.step += 1
            last_terms = self.mean_over_ranks(terms)
            if writer is not None and (self.step % config.log_every == 0 or self.step == config.steps):
                for name, value in last_terms.items():
                    writer.add_scalar(f"loss/{name}", value, self.step)
                writer.add_scalar("lr", lr, self.step)
            if self.step % config.val_every == 0 or self.step == config.steps:
                last_val = self.validate(writer)
            if self.step % config.checkpoint_every == 0 and self.step != config.steps:
                self.save()
            if stop_at_step is not None and self.step >= stop_at_step:
                break
        if self.step >= config.steps:
            self.save(final=True)
        if writer is not None:
            writer.close()
        elapsed = time.perf_counter() - start_time
        done = self.step - start_step
        return {"step": self.step, "steps_run": done, "world_size": self.world, "seconds": elapsed,
                "images_per_s": done * config.batch_size / elapsed if elapsed > 0 else 0.0,
                **{f"loss/{k}": v for k, v in last_terms.items()},
                **({f"val/{k}": v for k, v in last_val.items()} if last_val else {})}

    def elapsed(self) -> float:
        """Wall-clock seconds of the run so far, validations included, over every resume."""
        start = getattr(self, "start_time", None)
        return self.seconds_trained + (0.0 if start is None else time.perf_counter() - start)

    def validate(self, writer) -> dict | None:
        if not self.is_main or len(self.val_set) == 0:
            self.barrier()
            return None
        metrics = validate(self.regressor, self.model, self.val_loader(), self.config.val_auc_max_d, self.device)
        with open(self.out / METRICS_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": self.step, "seconds": round(self.elapsed(), 2), **metrics}) + "\n")
        if writer is not None:
            for name, value in metrics.items():
                writer.add_scalar(f"val/{name}", value, self.step)
            if self.config.overlay_samples > 0:
                self.log_overlays(writer)
        self.barrier()
        return metrics

    def log_overlays(self, writer) -> None:
        from .visualize import prediction_overlays  # renders: the package itself stays free of the renderers

        count = min(self.config.overlay_samples, len(self.val_set))
        images = torch.stack([self.val_set[i]["image"] for i in range(count)]).to(self.device)
        params = self.regressor.predict(images)
        writer.add_images("val/predictions", prediction_overlays(self.model, params, images), self.step)

    def mean_over_ranks(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss terms of the global batch (each rank's are means over its equal shard)."""
        values = torch.stack([v.detach().float() for v in terms.values()])
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(values)
            values = values / self.world
        return dict(zip(terms, values.tolist()))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.started_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def train(dataset: str | Path, out: str | Path, config: TrainConfig = TrainConfig(),
          stop_at_step: int | None = None) -> dict:
    """Train (or resume) the regressor on a dataset folder; see the module docstring for the run folder.

    Args:
        dataset: a folder written by ``diffface build-dataset`` (:mod:`diffface.data.format`).
        out: the run folder; a re-run into it resumes from ``RUN/checkpoints/last.pt``.
        config: the settings.
        stop_at_step: return after this step (as a kill would, but cleanly), for tests and time slicing.

    Returns:
        figures of the run: step, last losses per term, last validation metrics, images/s.

    Example:
        >>> train("data/synth96", "runs/mobileface", TrainConfig(steps=3000, loss="2d3d"))
    """
    dataset, out = Path(dataset), Path(out)
    if not dataset.is_dir():
        raise FileNotFoundError(f"{dataset}: no such dataset folder")
    run = _Run(dataset, out, config)
    try:
        with torch_threads(cpu_threads(config) if run.device.type == "cpu" else None):
            run.setup()
            return run.run(stop_at_step)
    finally:
        run.close()


def cpu_threads(config: TrainConfig) -> int:
    """Intra-op threads of one training process on the CPU (``TrainConfig.cpu_threads``; 0: the cores left
    to this rank beside its DataLoader workers, at least 1)."""
    if config.cpu_threads > 0:
        return config.cpu_threads
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, (os.cpu_count() or 1) // max(1, ranks_here) - config.num_workers)
