"""CLIP-GS: an object-level encoder of 3D Gaussians into the language space.

An object's Gaussians (a cluster of the map, or a synthetic object) are canonicalised
(:mod:`.objects`), cut into patches by the GS tokenizer (:mod:`.tokenizer`), encoded by a small
transformer (:mod:`.encoder`) into the teacher's text-embedding space, trained contrastively
against text and rendered views (:mod:`.train`), and then classify and retrieve the map's objects
without rendering (:mod:`.classify`). See docs/clipgs.md.
"""

from .encoder import EncoderConfig, ClipGSEncoder, load_encoder, save_encoder
from .objects import ATTR_DIM, Canonical, ObjectGaussians, attributes, canonicalize, object_from_map

__all__ = ["ATTR_DIM", "Canonical", "EncoderConfig", "ClipGSEncoder", "ObjectGaussians", "attributes",
           "canonicalize", "load_encoder", "object_from_map", "save_encoder"]
