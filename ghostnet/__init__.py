"""GhostNet v1/v2/v3 for inference: timm-compatible models, safe weight loading, fusion, channel weights."""

from .audio import LogMel
from .channel_weights import InferenceOutput, capture_channel_weights, channel_weight_names
from .fuse import for_inference, reparameterize
from .meta import AudioFrontend, ModelMeta, imagenet_labels
from .model import GhostNet, checkpoint_filter_fn
from .registry import create_model, default_meta, list_models
from .transforms import normalize, resize_crop
from .weights import WeightsError, init_random, load_weights, save_weights

__all__ = [
    "AudioFrontend",
    "GhostNet",
    "InferenceOutput",
    "LogMel",
    "ModelMeta",
    "WeightsError",
    "capture_channel_weights",
    "channel_weight_names",
    "checkpoint_filter_fn",
    "create_model",
    "default_meta",
    "for_inference",
    "imagenet_labels",
    "init_random",
    "list_models",
    "load_weights",
    "normalize",
    "reparameterize",
    "resize_crop",
    "save_weights",
]
