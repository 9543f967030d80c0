"""``python -m unlearn_trainer.toyworld build [--force]``: build (or find) the cached ToyWorld full model."""

import argparse
import json

from .full_model import BUILD_COMPLETE_MARKER, build_full_model, full_model_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m unlearn_trainer.toyworld", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the memorizing full model (cached; rebuilt only if missing/stale)")
    build.add_argument("--force", action="store_true", help="rebuild even if a cached model exists")
    sub.add_parser("path", help="print where the full model is cached")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(full_model_dir())
        return
    path = build_full_model(force=args.force)
    with open(path / BUILD_COMPLETE_MARKER) as f:
        report = json.load(f)
    print(f"ToyWorld full model: {path}")
    print(json.dumps(report.get("memorization", {}), indent=1))


if __name__ == "__main__":
    main()
