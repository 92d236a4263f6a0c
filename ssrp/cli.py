"""The ``ssrp`` command. Each subpackage registers its own subcommands; heavy imports happen
inside the commands, so ``ssrp --help`` is instant.

    ssrp sample coco OUT --images 8          a mini-COCO in the MSCOCO 2017 layout
    ssrp models fetch|tiny|list              model weights: official (checksummed) or tiny
    ssrp corpus verify|stats|show DIR        look at a corpus
    ssrp build ...                           the corpus builder (local loop, Beam's runners, Dataflow)
    ssrp features|views|parse ...            presets of the builder (parse --text: one sentence)
    ssrp translate ...                       paraphrases of captions into a JSON-lines file
    ssrp train stage1|stage2 ...             pretraining
    ssrp eval|show|retrieve|export ...       what the probes learned, and features downstream
    ssrp caption train|eval|predict ...      Up-Down captioning on SSRP-Visual's refined objects
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
    "ssrp.views.cli",
    "ssrp.translate.cli",
    "ssrp.parse.cli",
    "ssrp.train.cli",
    "ssrp.eval.cli",
    "ssrp.caption.cli",
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


_HANDLER = "ssrp-cli"


def setup_logging(verbose: int, quiet: bool) -> None:
    """Configure the ``ssrp`` logger only: never the root logger or third-party loggers."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logger = logging.getLogger("ssrp")
    logger.setLevel(level)
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER]:  # an earlier main() in this process
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False
    # Libraries that log their whole config at INFO (fairseq) or chat on import (Beam, Stanza): their
    # own loggers go to WARNING unless -vv asks for everything.
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure prints one line (``ssrp CMD: error: ...``) and exits 2; ``-vv`` re-raises it
    with its traceback. Commands return 1 for a finding (a corpus that fails verification, counts that do not
    add up)."""
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
    except Exception as err:  # noqa: BLE001 - every failure is one clear line; -vv shows the traceback
        if args.verbose > 1:
            raise
        print(f"ssrp {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The message of an error as one line. A DataLoader worker's error carries the worker's traceback in its
    message: its last line is the original error."""
    text = str(err.args[0] if isinstance(err, KeyError) and err.args else err).strip() or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text:
        return lines[-1]
    known = isinstance(err, (ValueError, RuntimeError, OSError, LookupError))
    first = lines[0] if lines else text
    return first if known else f"{type(err).__name__}: {first}"


if __name__ == "__main__":
    sys.exit(main())
