import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "qdiff", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "qdiff"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def random_clouds(b, n, seed, dtype=torch.float64, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, n, 3, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)


def random_mask(b, n, seed, min_valid=3, device="cpu"):
    """A boolean mask with at least min_valid valid atoms per cloud, valid atoms not contiguous."""
    g = torch.Generator().manual_seed(seed + 7)
    mask = torch.rand(b, n, generator=g) < 0.7
    mask[:, :min_valid] = True
    perm = torch.argsort(torch.rand(b, n, generator=g), dim=-1)
    return torch.gather(mask, 1, perm).to(device)
