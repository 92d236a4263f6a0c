"""Per-record failures as data: what every stage returns for an input it cannot process.

A stage never lets one bad record crash its batch. It returns a ``DeadLetter`` in that record's
place (same position in the output list), naming the record, the stage and the reason; the local
runner and the Beam pipeline route these to the dead-letter output and count them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


class RecordFailure(Exception):
    """Raised inside a stage for one record; the stage turns it into a DeadLetter.

    ``reason`` is a short stable code (e.g. ``corrupt_image``, ``empty_caption``), ``detail`` a
    human-readable sentence.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DeadLetter:
    key: str  # the input's key, e.g. "image/000000000042" or "text/000000000101/raw"
    stage: str  # features | augment | translate | parse | write | read
    reason: str  # stable code
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_failure(cls, key: str, stage: str, failure: RecordFailure) -> DeadLetter:
        return cls(key=key, stage=stage, reason=failure.reason, detail=failure.detail)


def is_dead(item: object) -> bool:
    return isinstance(item, DeadLetter)
