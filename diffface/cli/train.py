"""``diffface train``: train the parameter regressor on a dataset folder (resumable, multi-process)."""

from __future__ import annotations

from pathlib import Path

from .config_args import add_config_arguments, config_layers
from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train the MobileFace regressor on a dataset built by `diffface build-dataset`",
        description="Train on DATASET and write RUN/config.yaml, RUN/checkpoints/last.pt, RUN/model.pt, "
                    "RUN/metrics.jsonl and RUN/tensorboard. A re-run into RUN resumes exactly where the last "
                    "checkpoint left off; it is refused with another dataset or other training settings (only "
                    "--steps, to extend the run, the logging/validation/checkpoint intervals, --device, --workers "
                    "and --model's file may change). Several processes: torchrun --nproc_per_node=N -m diffface.cli.main "
                    "train ... (the global --batch-size is split over them). "
                    "Settings: defaults < --config YAML < the options below < --set key=value.")
    p.add_argument("dataset", type=Path, help="dataset folder (dataset.json, index.json, items/)")
    p.add_argument("--out", type=Path, required=True, help="run folder (a re-run into it resumes)")
    add_config_arguments(p, "TrainConfig", "RUN/config.yaml",
                         "override one setting, repeatable: --set norm=l1 --set augment=false")
    # the defaults are TrainConfig's, written out so that `diffface --help` does not import the networks
    # package (tests/cli/test_network_cli.py checks them against TrainConfig)
    p.add_argument("--steps", type=int, help="optimisation steps (default: 30000)")
    p.add_argument("--batch-size", type=int, help="global batch (default: 64)")
    p.add_argument("--loss", choices=["mse", "2d3d"], help="training loss (default: 2d3d)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: 0.003; 0.0003 after 0.67 of the steps)")
    p.add_argument("--width", type=int, help="first-layer channels of MobileFace (default: 10)")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="fine-tune: start from this model.pt's weights and parameter statistics (same network, "
                        "width and morphable model)")
    p.add_argument("--model", help="morphable model: auto (builtin when the dataset used it) or a model file")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: 2)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu; ranks use cuda:LOCAL_RANK)")
    p.add_argument("--seed", type=int, help="weights, data order and augmentation seed (default: 0)")
    p.add_argument("--unlabeled", metavar="PHOTOS",
                   help="also train on unlabelled face photos through the photometric loss: a folder or a list "
                        "file of images (needs --set photometric_weight=W > 0)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def resolve_config(args):
    """Defaults, then ``--config``, then the options given, then ``--set``, checked together (so
    ``--unlabeled`` may come with ``--set photometric_weight=...``)."""
    from diffface.networks.config import TrainConfig

    given = {"steps": args.steps, "batch_size": args.batch_size, "loss": args.loss, "lr": args.lr,
             "width": args.width, "model": args.model, "num_workers": args.workers, "device": args.device,
             "seed": args.seed, "unlabeled": args.unlabeled, "init": args.init}
    layers = config_layers(args, given, "loss=mse")
    return TrainConfig().layered(layers)


def run(args) -> int:
    from diffface.networks.train import train

    figures = train(args.dataset, args.out, resolve_config(args))
    from diffface.networks.distributed import world_from_env

    if world_from_env()[0] == 0:
        print_figures({**figures, "out": str(args.out)}, args.json, title="diffface train")
    return 0
