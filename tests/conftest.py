import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
# the prompt sets' cache (dgx data): empty, and never the user's
os.environ["DGX_DATA"] = os.path.join(__import__("tempfile").mkdtemp(prefix="dgx-data-"), "cache")

import pytest  # noqa: E402
import torch  # noqa: E402
from dgx_test_helpers import WORDS, save_tiny_sd3  # noqa: E402

torch.set_num_threads(2)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: launches several processes (accelerate launch, or dgx killed and resumed); -m 'not slow' skips",
    )


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory):
    """A tiny random StableDiffusion3Pipeline saved to a folder (like diffusers' dummy components)."""
    return save_tiny_sd3(tmp_path_factory.mktemp("tiny_sd3"))


@pytest.fixture(scope="session")
def tiny_model(tiny_pipe_dir):
    from dgx.sampler import SD3Model

    return SD3Model.from_pretrained(tiny_pipe_dir)


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    """A tiny random FluxPipeline (guidance-distilled, like FLUX.1-dev) saved to a folder."""
    from dgx.sampler.tiny import tiny_flux_pipeline

    d = tmp_path_factory.mktemp("tiny_flux")
    tiny_flux_pipeline(WORDS).save_pretrained(d)
    return d


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate's state is a process-wide singleton: reset it after every test (as accelerate's own
    AccelerateTestCase does), so a test may build an Accelerator with other settings."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
