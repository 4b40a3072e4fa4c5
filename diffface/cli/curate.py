"""``diffface curate``: keep or reject a dataset's fits in the browser (or export the decisions)."""

from __future__ import annotations

import sys
from pathlib import Path

from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser(
        "curate", help="review a dataset's fits in the browser: keep/reject, undo, filter, sort by fit quality",
        description="Serve a local page (127.0.0.1) showing every item of DATASET: the crop with the fitted mesh "
                    "and landmarks beside the rendered fit, its quality score and automatic flags. Click or press "
                    "k (keep), r/x (reject), u/Ctrl+Z (undo), arrows (move), f (filter), s (sort). Every decision "
                    "is appended to DATASET/curation.jsonl before the page shows it saved; the dataset reader "
                    "leaves rejected items out. The printed URL carries a random session token that every "
                    "request must present (other web pages cannot post decisions or read the items). "
                    "With --export, write the decisions and exit.")
    p.add_argument("dataset", type=Path, help="a dataset folder built by `diffface build-dataset`")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1, this machine only; another one, e.g. 0.0.0.0, lets "
                        "anyone on the network who has the URL change the decisions, over unencrypted HTTP)")
    p.add_argument("--export", type=Path, metavar="FILE",
                   help="write the decisions to FILE and exit: JSON for *.json ({keep, reject, unreviewed}), "
                        "else 'decision<TAB>name' lines")
    p.add_argument("--decision", choices=["keep", "reject", "unreviewed"],
                   help="with --export: only the names with this decision")
    p.add_argument("--auto", action="store_true",
                   help="no browser: reject every item whose automatic quality flags are raised and exit")
    p.add_argument("--worst-fraction", type=float, default=0.0, metavar="F",
                   help="with --auto: also reject this share of the items, the worst-scoring unflagged ones")
    p.add_argument("--json", action="store_true", help="with --auto: print the counts as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffface.app.dataset.auto_curation import curate_automatically
    from diffface.app.dataset.curation import CurationServer, decision_lists, export_decisions, is_loopback_host
    from diffface.data.format import read_info

    read_info(args.dataset)  # a clear error for a folder that is not a dataset
    if args.auto:
        print_figures(curate_automatically(args.dataset, args.worst_fraction), args.json,
                      title="diffface curate --auto")
        return 0
    if args.export:
        path = export_decisions(args.dataset, args.export, args.decision)
        counts = {k: len(v) for k, v in decision_lists(args.dataset).items()}
        print(f"wrote {path} ({counts['keep']} kept, {counts['reject']} rejected, {counts['unreviewed']} unreviewed)")
        return 0
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    try:
        server = CurationServer(args.dataset, port=args.port, host=args.host)
    except OSError as exc:
        raise RuntimeError(f"cannot listen on {args.host}:{args.port} ({exc}); try --port 0") from exc
    if not is_loopback_host(args.host):
        print(f"WARNING: --host {args.host} serves the curation page beyond this machine: anyone on the network "
              f"who sees the URL (with its token) can change the decisions of {args.dataset}, and HTTP sends it "
              f"unencrypted; use the default --host 127.0.0.1 (with an SSH tunnel for a remote machine) unless "
              f"this network is trusted", file=sys.stderr, flush=True)
    print(f"curating {args.dataset} ({len(server.session.entries)} items): open {server.url}  (Ctrl+C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
