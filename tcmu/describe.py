"""What a handler class offers, as text: `tcmu-harness handler-info SPEC` prints it.

The class's summary, which storage methods a BlockHandler implements (and which are
async), the commands, VPD pages and mode pages it adds, and its options (name, type,
default, help).
"""

from __future__ import annotations

import inspect

from tcmu.handler import Handler
from tcmu.options import describe as describe_options


def describe(cls: type[Handler], target: str = "") -> str:
    """`target`: the spec's "module:Class" or "path/file.py:Class", as given."""
    lines = [f"{cls.__name__} ({target or f'{cls.__module__}:{cls.__name__}'})"]
    doc = inspect.cleandoc(vars(cls).get("__doc__") or "")  # its own, not a base's
    if doc:
        lines.append("  " + doc.split("\n\n", 1)[0].replace("\n", " "))
    lines.append(f"subtype: {cls.subtype}")
    lines += _storage(cls)
    lines += _extensions(cls)
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


def _extensions(cls: type[Handler]) -> list[str]:
    from tcmu.blockutil import declared
    from tcmu.commands import _COMMAND_MARK
    from tcmu.inquiry import _VPD_MARK
    from tcmu.modepages import declared_mode_pages

    lines = []
    for name, d in declared(cls, _COMMAND_MARK).items():
        sa = "" if d.service_action is None else f"/{d.service_action:02x}"
        lines.append(f"adds command {d.opcode:02x}{sa} ({len(d.usage)}-byte CDB, "
                     f"access {d.access.value}): {name}()")
    lines += [f"adds VPD page {code:02x}: {name}()"
              for name, code in declared(cls, _VPD_MARK).items()]
    lines += [f"adds mode page {code:02x} ({len(page.default) - 2} parameter bytes)"
              for code, page in declared_mode_pages(cls).items()]
    return lines
