"""The per-VM stage2 script: what the guest runs after /init switched to the host root.

It mounts configfs, puts the kernel's modules at /lib/modules/<version> (for kmod
tools), prepares what rtslib needs, and runs the guest agent from the host's checkout
with the host's interpreter. When the agent exits, the guest powers off.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

GUEST_RUN_DIR = "/run/tcmu-harness"


def stage2_script(
    *,
    kernel_version: str,
    modules_dir: Path,
    python: str,
    work_dir: Path,
    env: Mapping[str, str],
    warmup: tuple[str, ...] = (),
) -> str:
    q = shlex.quote
    exports = " ".join(f"{k}={q(v)}" for k, v in sorted(env.items()))
    mod_target = f"/lib/modules/{kernel_version}"
    warm = "".join(f" --warm {q(fn)}" for fn in warmup)
    return f"""#!/bin/sh
# tcmu-harness stage2 (generated per VM by vm/guest_boot.py)
console() {{ echo "tcmu-harness: $*" > /dev/console; }}
mount -t configfs configfs /sys/kernel/config || console "cannot mount configfs"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || console "cannot mount devpts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || console "cannot mount /dev/shm"
mkdir -p {q(mod_target)} && mount --bind {q(str(modules_dir))} {q(mod_target)} \\
    || console "cannot bind the kernel modules at {mod_target}"
# The kernel's PR code rewrites its APTPL file in <dbroot>/pr on every registration and
# fails PR OUT with NOT READY 08/00 (after applying it) when that directory is missing.
# dbroot defaulted to /var/target at module load; set it while no device exists (rtslib
# wants /etc/target and cannot change it later).
mkdir -p /etc/target/pr {GUEST_RUN_DIR}/handlers
echo /etc/target > /sys/kernel/config/target/dbroot || console "cannot set the target dbroot"
hostname tcmu-harness-guest
export {exports}
cd {q(str(work_dir))} || console "cannot enter "{q(str(work_dir))}
{q(python)} -m tcmu_harness.vm.agent{warm}
console "guest agent exited with status $?; powering off"
sync
echo o > /proc/sysrq-trigger
sleep 60
"""
