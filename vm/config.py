"""VM settings: data only. One frozen dataclass shared by pytest options and the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_cache_dir() -> Path:
    """$TCMU_HARNESS_CACHE, else $XDG_CACHE_HOME/tcmu-harness, else ~/.cache/tcmu-harness."""
    explicit = os.environ.get("TCMU_HARNESS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tcmu-harness"


ACCELERATORS = ("auto", "kvm", "tcg")


@dataclass(frozen=True)
class VmConfig:
    # Kernel spec as parsed by vm/kernel.py: None = the default Debian kernel.
    kernel: str | None = None
    # Guest RAM. The TCMU data area is demand-paged, 1 GiB is plenty for the suites.
    memory_mb: int = 1024
    # vCPUs. Under TCG each is a host thread (thread=multi), so more than the host's
    # cores only adds contention.
    cpus: int = 2
    # "auto" probes KVM with a bounded boot and falls back to TCG (vm/accel.py).
    accel: str = "auto"
    # Downloaded kernels, initramfs images, the KVM probe result.
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Where each VM's console log is kept after the VM is gone (None: not kept).
    log_dir: Path | None = None
    # From QEMU start to the agent's hello. TCG boot + Python start is ~10 s here.
    boot_timeout: float = 180.0
    # Default bound for one agent request that has no timeout of its own.
    request_timeout: float = 120.0
    # Between the poweroff request and SIGKILL of QEMU.
    shutdown_grace: float = 10.0
    qemu_binary: str = "qemu-system-x86_64"
    # Guest functions the agent calls in the background as soon as it runs: the
    # handler forkserver takes seconds to import under TCG, so start it during boot.
    guest_warmup: tuple[str, ...] = ("tcmu_harness.lio.lun:warm",)

    def __post_init__(self) -> None:
        if self.accel not in ACCELERATORS:
            raise ValueError(
                f"unknown accelerator {self.accel!r}; use one of {', '.join(ACCELERATORS)}"
            )
        if self.memory_mb < 256:
            raise ValueError(f"{self.memory_mb} MiB of guest memory is too little; use >= 256")
        if self.cpus < 1:
            raise ValueError(f"the VM needs at least one vCPU, not {self.cpus}")
        if not self.request_timeout > 0:
            raise ValueError(f"the request timeout must be > 0 seconds, not {self.request_timeout}")
