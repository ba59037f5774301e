"""Which raster bands the model sees as red, green, blue: a sensible default per raster, and the
user's choice remembered per layer (a layer property, saved with the project).

The core (mgimm_core/scene.py) takes red/green/blue from the colour interpretation, or a file's own
1 or 3 bands; anything else (a 6-band Landsat stack) needs a choice, which the panel's Bands row
offers with this default: colour interpretation, else bands named red/green/blue, else the true
colour bands of a known sensor (Landsat, Sentinel-2) recognised by its file name or metadata, else
the first three bands (the panel then asks the user to check them).

Pure Python (no Qt, no GDAL): the project's tests load it by file path too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

PROPERTY = "mgimm_geo/bands"     # the layer's custom property holding the user's choice, "4,3,2"
RGB = ("red", "green", "blue")

#: sensor -> (pattern in the file name or metadata, upper case; the true-colour bands by band
#: number of that sensor, as names like B4 / SR_B4 / B04 call them)
SENSORS = (
    ("Landsat 8/9 OLI", r"\bL[CO]0?[89]|LANDSAT[_ -]?[89]\b|\bOLI\b", (4, 3, 2)),
    ("Landsat 4-7 TM/ETM+", r"\bL[TE]0?[457]|LANDSAT[_ -]?[457]\b", (3, 2, 1)),
    ("Sentinel-2 MSI", r"\bS2[ABC]?_|SENTINEL[_ -]?2|\bMSIL[12]", (4, 3, 2)),
)


@dataclass(frozen=True)
class BandChoice:
    """Three 1-based bands (red, green, blue) and why they were chosen, for the panel."""

    bands: Tuple[int, int, int]
    reason: str
    certain: bool = True          # False: a guess the user should check (the first three bands)

    def text(self) -> str:
        return ",".join(str(b) for b in self.bands)


def _band_numbered(descriptions: Sequence[str], number: int) -> Optional[int]:
    """The 1-based position of the band a sensor calls `number` (B4, SR_B4, B04, "Band 4"), if named."""
    pattern = re.compile(rf"(?:^|[^0-9A-Z])(?:SR_)?B(?:AND)?[ _]?0?{number}(?:$|[^0-9])")
    for index, name in enumerate(descriptions, start=1):
        if pattern.search((name or "").upper()):
            return index
    return None


def default_bands(interpretations: Sequence[str], descriptions: Sequence[str] = (), hint: str = ""
                  ) -> Optional[BandChoice]:
    """The default red/green/blue bands of a raster, or None when the core's own default holds (red,
    green, blue colour interpretation, or 1 or 3 data bands) and no choice is needed.

    interpretations: each band's colour interpretation in lower case ("red", "gray", "alpha",
    "undefined"); descriptions: each band's description ("" when none); hint: the file name and
    metadata text, where a known sensor shows itself (LC08_..., SPACECRAFT_ID=LANDSAT_8)."""
    names = [i.lower() for i in interpretations]
    if all(colour in names for colour in RGB):
        return None
    data = [i for i, name in enumerate(names, start=1) if name != "alpha"]
    if len(data) in (1, 3):
        return None
    named = [next((i for i, d in enumerate(descriptions, start=1) if re.search(rf"\b{colour}\b", (d or "").lower())),
                  None) for colour in RGB]
    if all(named):
        return BandChoice((named[0], named[1], named[2]), "the bands named red, green, blue")
    upper = hint.upper()
    for sensor, pattern, true_colour in SENSORS:
        if re.search(pattern, upper):
            found = [_band_numbered(descriptions, n) for n in true_colour]
            if all(found):
                return BandChoice((found[0], found[1], found[2]), f"{sensor} true colour")
            if sensor.startswith("Landsat 8") and len(data) == 6:   # a 6-band stack of OLI bands 2-7
                return BandChoice((3, 2, 1), f"{sensor} true colour (bands 2-7 stacked)")
            if max(true_colour) <= len(data):
                return BandChoice(true_colour, f"{sensor} true colour")
    first = tuple(data[:3]) if len(data) >= 3 else (data[0],) * 3
    return BandChoice((first[0], first[1], first[2]), "the first three bands: check that they are red, green, "
                                                       "blue", certain=False)


def shown_bands(interpretations: Sequence[str], choice: Optional[BandChoice]) -> Tuple[int, int, int]:
    """The bands the Bands row shows when the user has chosen none: the default choice, else (the
    core's own default holds) red, green, blue by colour interpretation, else 1, 2, 3."""
    if choice is not None:
        return choice.bands
    names = [i.lower() for i in interpretations]
    if all(colour in names for colour in RGB):
        red, green, blue = (names.index(colour) + 1 for colour in RGB)
        return red, green, blue
    return 1, 2, 3


def parse_bands(text: str, count: int) -> Optional[Tuple[int, int, int]]:
    """A remembered choice "4,3,2" when it still fits a raster of `count` bands, else None."""
    try:
        bands = tuple(int(b) for b in str(text or "").split(","))
    except ValueError:
        return None
    if len(bands) != 3 or not all(1 <= b <= count for b in bands):
        return None
    return bands[0], bands[1], bands[2]
