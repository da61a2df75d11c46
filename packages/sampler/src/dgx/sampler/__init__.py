"""dgx.sampler: flow-matching SDE/ODE/CPS steps with log-probs, noise schedules, rollouts,
batched ODE_n continuation and model adapters (diffusers SD3 and FLUX)."""

from dgx.sampler.continuation import continuation_path, continue_ode, continue_ode_naive
from dgx.sampler.errors import SamplerError
from dgx.sampler.flux import FluxModel
from dgx.sampler.model import Conditioning, FlowModel, SD3Model
from dgx.sampler.schedules import ConstantNoise, NoiseSchedule, TableNoise, UniformNoise, Windowed, schedule_at
from dgx.sampler.steps import StepOutput, cps_step, gaussian_log_prob, ode_step, sde_step, takes_noise
from dgx.sampler.trajectory import Trajectory, rollout, sample_generator

__all__ = [
    "Conditioning",
    "ConstantNoise",
    "FlowModel",
    "FluxModel",
    "NoiseSchedule",
    "SD3Model",
    "SamplerError",
    "StepOutput",
    "TableNoise",
    "Trajectory",
    "UniformNoise",
    "continuation_path",
    "continue_ode",
    "Windowed",
    "schedule_at",
    "continue_ode_naive",
    "cps_step",
    "gaussian_log_prob",
    "ode_step",
    "rollout",
    "sample_generator",
    "sde_step",
    "takes_noise",
]
