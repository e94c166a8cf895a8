"""The sample museum shipped with the platform: the demo's content and the reference museum file."""

from __future__ import annotations

from pathlib import Path

from content.model import Museum, load_museum

SAMPLE_MUSEUM_PATH = Path(__file__).parent / "sample_museum" / "museum.json"
SAMPLE_MIN_ROOMS = 3
SAMPLE_MIN_ARTWORKS = 20


def load_sample_museum() -> Museum:
    """The demo museum (5 rooms, 26 public-domain works, French and English, demonstration media)."""
    return load_museum(SAMPLE_MUSEUM_PATH, min_rooms=SAMPLE_MIN_ROOMS, min_artworks=SAMPLE_MIN_ARTWORKS)
