"""The host programs a VM needs (the guest runs the host's own, over 9p), checked before
anything boots: each missing one is named with the Debian package that provides it."""

from __future__ import annotations

import shutil

from tcmu_harness.vm.client import VMError

# program -> Debian package; busybox, kmod and zstd are checked where they are used.
GUEST_TOOLS = {"sg_raw": "sg3-utils", "sg_inq": "sg3-utils", "sg_reset": "sg3-utils"}


class MissingHostTool(VMError):
    """A program the VM needs is not installed on the host."""


def require_host_tools(qemu_binary: str) -> None:
    missing = {tool: package for tool, package in GUEST_TOOLS.items()
               if shutil.which(tool) is None}  # fmt: skip
    if shutil.which(qemu_binary) is None:
        missing = {qemu_binary: "qemu-system-x86", **missing}
    if missing:
        packages = " ".join(dict.fromkeys(missing.values()))
        raise MissingHostTool(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed on "
            f"this host; install {packages} (apt-get install {packages}) or run .ci/setup")
