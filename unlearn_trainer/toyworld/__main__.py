"""``python -m unlearn_trainer.toyworld build [--force] [--retrained forget05|forget10|forget15|all]``: build (or
find) the cached ToyWorld full model, and the retrained ("oracle") models of the named forget splits."""

import argparse
import json

from .full_model import (
    BUILD_COMPLETE_MARKER,
    build_full_model,
    build_retrained_model,
    full_model_dir,
    retrained_model_dir,
)

RETRAINED = {"forget05": 0.05, "forget10": 0.10, "forget15": 0.15}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m unlearn_trainer.toyworld", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the memorizing full model (cached; rebuilt only if missing/stale)")
    build.add_argument("--force", action="store_true", help="rebuild even if a cached model exists")
    build.add_argument("--retrained", choices=[*RETRAINED, "all"], default=None,
                       help="also build the model retrained without that forget split (or all three)")
    path = sub.add_parser("path", help="print where the full (or a retrained) model is cached")
    path.add_argument("--retrained", choices=list(RETRAINED), default=None)
    args = parser.parse_args(argv)
    if args.command == "path":
        print(retrained_model_dir(ratio=RETRAINED[args.retrained]) if args.retrained else full_model_dir())
        return
    path = build_full_model(force=args.force)
    _print_report("full", path)
    tags = list(RETRAINED) if args.retrained == "all" else [args.retrained] if args.retrained else []
    for tag in tags:
        _print_report(f"retrained ({tag})", build_retrained_model(ratio=RETRAINED[tag], force=args.force))


def _print_report(what, path):
    with open(path / BUILD_COMPLETE_MARKER) as f:
        report = json.load(f)
    print(f"ToyWorld {what} model: {path} (training {report.get('train_runtime_s')} s)")
    print(json.dumps(report.get("memorization", {}), indent=1))


if __name__ == "__main__":
    main()
