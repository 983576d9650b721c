"""TEST ONLY (tests/test_fsdp_cpu.py puts this folder on the ranks' PYTHONPATH): accelerate 1.15 takes the
FSDP path only on accelerators; on CPU (MULTI_CPU, gloo) it drops the FSDP plugin. This keeps the plugin and
switches the state to FSDP, so FSDP2 runs on CPU ranks through the product's own launch and settings."""

import os

if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    _init = AcceleratorState.__init__

    def __init__(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            if self._mixed_precision != "no":
                plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = plugin
            self.distributed_type = DistributedType.FSDP
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = __init__
