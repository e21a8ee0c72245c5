"""Builder: makes configurations and profiles (`trt_config`) and builds plans (`build`)."""

from __future__ import annotations

from typing import Any

from ghost_deploy.testing.trtsim.build import build_plan
from ghost_deploy.testing.trtsim.faults import apply_build_faults
from ghost_deploy.testing.trtsim.sim import Sim, State
from ghost_deploy.testing.trtsim.trt_basic import host_memory
from ghost_deploy.testing.trtsim.trt_config import ConfigState, ProfileState
from ghost_deploy.testing.trtsim.trt_network import NetworkState, network_flags_value


class BuilderState(State):
    """Builder(logger): creating one initialises CUDA (the runtime API makes a context current)."""

    def __init__(self, sim: Sim, logger: Any) -> None:
        super().__init__(sim)
        self.logger = logger
        sim.driver.runtime_context()

    @classmethod
    def construct(cls, sim: Sim, owner: str, logger: Any) -> BuilderState:
        """`Builder(logger)`."""
        return cls(sim, sim.expect(logger, "ILogger"))

    @property
    def num_DLA_cores(self) -> int:
        """s9: "Builder.num_DLA_cores is the only reliable count of DLA cores on the device"."""
        return self._sim.gpu.dla_cores

    # FP16 is fast from compute capability 5.3, INT8 (dp4a) from 6.1, TF32 from 8.0 (CUDA facts; simulated)
    @property
    def platform_has_fast_fp16(self) -> bool:
        """Whether the GPU has fast FP16."""
        return self._sim.gpu.cc >= (5, 3)

    @property
    def platform_has_fast_int8(self) -> bool:
        """Whether the GPU has fast INT8."""
        return self._sim.gpu.cc >= (6, 1)

    @property
    def platform_has_tf32(self) -> bool:
        """Whether the GPU has TF32."""
        return self._sim.gpu.cc >= (8, 0)

    def create_network(self, flags: Any = 0) -> Any:
        """An empty network with the creation flags (a bit mask of 1 << NetworkDefinitionCreationFlag)."""
        return self._sim.new("INetworkDefinition", NetworkState(self._sim, network_flags_value(flags)))

    def create_builder_config(self) -> Any:
        """A builder configuration with TensorRT's defaults."""
        return self._sim.new("IBuilderConfig", ConfigState(self._sim, self.logger))

    def create_optimization_profile(self) -> Any:
        """An empty optimization profile."""
        return self._sim.new("IOptimizationProfile", ProfileState(self._sim))

    def build_serialized_network(self, network: Any, config: Any, kernel_text: Any = None) -> Any:
        """The plan as IHostMemory, or None with the reason logged as an error."""
        if kernel_text is not None:
            raise self._sim.unsupported("build_serialized_network with kernel_text")
        net = self._sim.expect(network, "INetworkDefinition")._trtsim
        cfg = self._sim.expect(config, "IBuilderConfig")._trtsim
        plan = build_plan(self._sim, self.logger, net, cfg)
        return None if plan is None else host_memory(self._sim, apply_build_faults(plan))

    def build_engine(self, network: Any, config: Any) -> Any:
        """8.x (deprecated): build and deserialize in one step."""
        from ghost_deploy.testing.trtsim.trt_runtime import RuntimeState

        plan = self.build_serialized_network(network, config)
        return None if plan is None else RuntimeState(self._sim, self.logger).deserialize_cuda_engine(plan)
