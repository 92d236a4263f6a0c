"""The ``ssrp`` command. Each subpackage registers its own subcommands; heavy imports happen
inside the commands, so ``ssrp --help`` is instant.

    ssrp sample coco OUT --images 8          a mini-COCO in the MSCOCO 2017 layout
    ssrp models fetch|tiny|list              model weights: official (checksummed) or tiny
    ssrp corpus verify|stats|show DIR        look at a corpus
    ssrp build ...                           the Beam corpus builder (local runner or Dataflow)
    ssrp features|augment|parse ...          single stages without Beam
    ssrp train stage1|stage2 ...             pretraining
    ssrp eval|show|retrieve|export ...       what the probes learned, and features downstream
    ssrp finetune|predict|score ...          NLVR2, VQA, GQA with the relationship-aware features
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ssrp import __version__

# Modules that define register(subparsers). A module missing here means its stage has not landed.
COMMAND_MODULES = (
    "ssrp.sample.cli",
    "ssrp.models.cli",
    "ssrp.corpus.cli",
    "ssrp.pipeline.cli",
    "ssrp.features.cli",
    "ssrp.augment.cli",
    "ssrp.parse.cli",
    "ssrp.augment.cli_translate",
    "ssrp.train.cli",
    "ssrp.eval.cli",
    "ssrp.finetune.cli",
)


NOISY_LIBRARIES = ("fairseq", "fairseq_cli", "hydra", "stanza", "apache_beam", "root.apitools", "matplotlib", "PIL", "h5py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssrp",
        description="Rebuild the SSRP pretraining corpus from raw MSCOCO and train SSRP on it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--version", action="version", version=f"ssrp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    """Configure the ``ssrp`` logger only: never the root logger or third-party loggers."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logger = logging.getLogger("ssrp")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.propagate = False
    # Libraries that log their whole config at INFO (fairseq) or chat on import (Beam, Stanza): their
    # own loggers go to WARNING unless -vv asks for everything.
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        if args.verbose > 1:
            raise
        print(f"ssrp {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
