"""Language field of the map: per-Gaussian latents, their decoders and granularity-aware
distillation (GAGS section 2). Queries on it live in :mod:`gags_ros.core.query`."""

from .field import FeatureDecoder, GranularityDecoder, LanguageField, init_latents, render_channels

__all__ = ["Distiller", "FeatureDecoder", "GranularityDecoder", "LanguageField", "init_latents",
           "render_channels"]


def __getattr__(name):
    # The distiller pulls in the teacher interfaces; import it on first use only.
    if name == "Distiller":
        from .distill import Distiller

        return Distiller
    raise AttributeError(name)
