"""The small JSON manifests that describe a model folder (the detector's manifest.json, the parser's
ssrp-parser.json): one reader and one writer for all of them."""

from __future__ import annotations

import json
import os

from ssrp.fileutil import atomic_write_text


def write_manifest(path: str, data: dict) -> str:
    """Write a manifest atomically (sorted keys, indented)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
    return path


def read_manifest(path: str, fmt: str, error: type[Exception], fix: str, version: int | None = None) -> dict:
    """The manifest at ``path``, checked to be of format ``fmt`` (and ``version``); ``error`` names the problem,
    with ``fix`` (how to get a valid folder) when the file is missing."""
    if not os.path.isfile(path):
        raise error(f"{path} not found: {fix}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable manifest ({err}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != fmt or (version is not None
                                                                    and data.get("format_version") != version):
        found = f"{data.get('format')} v{data.get('format_version')}" if isinstance(data, dict) else type(data).__name__
        raise error(f"{path}: format {found} is not {fmt}{f' v{version}' if version is not None else ''}")
    return data
