"""A VirtualMachine that is the kept VM of `tcmu-harness vm up` (vm/keeper.py): start()
attaches to the keeper instead of booting, close() detaches and leaves the VM running.
Everything else (run, call, read_file, kernel_log, loss verdicts) is VirtualMachine's,
over the keeper's relay."""

from __future__ import annotations

import socket
from pathlib import Path

from tcmu_harness.vm.client import AgentClient
from tcmu_harness.vm.keeper import KeeperError, read_state
from tcmu_harness.vm.kernel import Kernel
from tcmu_harness.vm.machine import VirtualMachine


class AttachedMachine(VirtualMachine):
    def _start(self) -> None:
        state = read_state(self.config.cache_dir)
        if state is None:
            raise KeeperError(f"no kept VM is running (for the cache dir "
                              f"{self.config.cache_dir}); start one with tcmu-harness vm up")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(state["socket"])
        except OSError as exc:
            conn.close()
            raise KeeperError(f"the kept VM's keeper (pid {state['pid']}) does not answer "
                              f"({exc}); run tcmu-harness vm down, then vm up") from None
        self._client = AgentClient(conn, self._describe_kept_loss)
        hello = self._client.wait_hello(60.0)
        if "error" in hello:
            self.close()
            raise KeeperError(hello["error"])
        kept = hello["keeper"]
        self.kernel = Kernel(kept["kernel"]["version"], Path(kept["kernel"]["image"]),
                             Path(kept["kernel"]["modules_dir"]), kept["kernel"]["source"])
        self.accel = kept["accel"]
        self.accel_reason = f"{kept['accel_reason']}; kept VM, pid {kept['pid']}"
        self.console_log = Path(kept["console_log"]) if kept["console_log"] else None
        self._kept_share = Path(kept["share_dir"])
        self.log(f"attached to the kept VM (keeper pid {kept['pid']})")

    def _describe_kept_loss(self) -> str:
        return "the kept VM's keeper closed the connection (the guest is gone or vm down)"

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def share_dir(self) -> Path:
        return self._kept_share

    def close(self, *, fast: bool = False) -> None:
        """Detach; the kept VM keeps running (tcmu-harness vm down stops it)."""
        if self._client is not None:
            self._client.close()
            self._client = None
