"""What a handler class offers, as text: `tcmu-harness handler-info SPEC` prints it.

The class's summary, which storage methods a BlockHandler implements (and which are
async), and its options (name, type, default, help).
"""

from __future__ import annotations

import inspect

from tcmu.handler import Handler
from tcmu.options import describe as describe_options


def describe(cls: type[Handler]) -> str:
    lines = [f"{cls.__name__} ({cls.__module__}:{cls.__name__})"]
    doc = inspect.cleandoc(vars(cls).get("__doc__") or "")  # its own, not a base's
    if doc:
        lines.append("  " + doc.split("\n\n", 1)[0].replace("\n", " "))
    lines.append(f"subtype: {cls.subtype}")
    lines += _storage(cls)
    lines.append("options:")
    lines += ["  " + line for line in describe_options(cls)]
    return "\n".join(lines)


def _storage(cls: type[Handler]) -> list[str]:
    from tcmu.block import STORAGE_METHODS, BlockHandler

    if not issubclass(cls, BlockHandler):
        return ["kind: Handler (handle() answers every CDB itself)"]
    own = []
    for name in STORAGE_METHODS:
        method = getattr(cls, name)
        if getattr(BlockHandler, name) is method:
            continue  # the base's default
        own.append(f"{name} (async)" if inspect.iscoroutinefunction(method) else name)
    return ["kind: BlockHandler (SCSI by the base, storage by the class)",
            "storage methods: " + (", ".join(own) or "none")]
