"""Models built on effattn: NA vision backbones (NAT, DiNAT), a 3-D NA video model and a
lightning-attention language model, plus a converter from NATTEN-based models.

    model = effattn.models.create_model("nat_tiny", num_classes=100)
    effattn.models.list_models()

`na_backend("flex")` and `lightning_backend("fla")` (context managers) swap the attention of
the NA and lightning models for PyTorch FlexAttention and fla, with the same weights, for
side-by-side benchmarks (benchmarks/bench_models.py).
"""
from .convert import convert_natten_model, load_natten_state_dict
from .layers import na_backend
from .lightning_lm import LightningLM, lightning_backend, lightning_lm_mini
from .nat import NAT, dinat_tiny, nat_mini, nat_tiny
from .video import NAVideo, na3d_video_mini

__all__ = ["create_model", "list_models", "NAT", "NAVideo", "LightningLM",
           "convert_natten_model", "load_natten_state_dict", "na_backend", "lightning_backend"]

_REGISTRY = {
    "nat_mini": nat_mini,
    "nat_tiny": nat_tiny,
    "dinat_tiny": dinat_tiny,
    "na3d_video_mini": na3d_video_mini,
    "lightning_lm_mini": lightning_lm_mini,
}


def list_models():
    """Names accepted by `create_model`, sorted."""
    return sorted(_REGISTRY)


def create_model(name, **kwargs):
    """Build a model by name; keyword arguments override its configuration (for example
    `num_classes`, `features_only`, `depths`, `drop_path_rate`, `vocab_size`)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)
