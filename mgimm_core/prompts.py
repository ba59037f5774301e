"""The instructions the model is trained and queried with.

Training and the `describe` command import the same strings: a model answers best the questions it
was trained on (the demo model's word-level vocabulary knows exactly these words).
"""

from collections.abc import Iterable

# Stage 1, region-attribute alignment: the reference code's instruction, word for word.
ATTRIBUTE_PROMPT = ("Based on the provided region of the remote sensing image, describe the basic "
                    "attributes of the main objects in that region.")

# Stage 2, detailed description from region + global features.
DESCRIPTION_PROMPT = ("Describe the provided region of the remote sensing image in detail, including "
                      "the land cover and the attributes, counts and positions of the objects.")


# Attribute-guided descriptions (the paper's point): the description question carries the region's
# attribute answers (its own stage-1 answer, or one per guide object), so the description names the
# objects with the attributes the model itself gave them. Models trained with it say so in their
# processor settings (`guided_descriptions`); others get DESCRIPTION_PROMPT alone.
GUIDANCE_LEAD = "Attributes:"


def guided_description_prompt(attribute_answers: Iterable[str | None], prompt: str = DESCRIPTION_PROMPT) -> str:
    """The description question followed by the attribute answers it must agree with."""
    answers = [a.strip().rstrip(".") for a in attribute_answers if a and a.strip()]
    return f"{prompt} {GUIDANCE_LEAD} {'; '.join(answers)}." if answers else prompt


# The scene's ground sample distance in the question (world-v3 demo models): "Pixel size 0.5 m." before
# every question, the chip's GSD (`RegionChip.gsd_m`, metres per chip pixel as read) snapped to the
# nearest of GSD_STEPS_M on a log scale, so a word-level vocabulary knows every value. Models trained
# with it say so in their processor settings (`gsd_prompt`); others get their questions unchanged.
GSD_LEAD = "Pixel size"
GSD_STEPS_M = (0.3, 0.5, 1, 2, 3, 5, 10, 15, 30, 60, 100)


def gsd_phrase(gsd_m: float | None) -> str:
    """"Pixel size 0.5 m." for a GSD in metres (snapped to GSD_STEPS_M); "" when unknown."""
    import math

    if gsd_m is None or not math.isfinite(gsd_m) or gsd_m <= 0:
        return ""
    step = min(GSD_STEPS_M, key=lambda s: abs(math.log(s / gsd_m)))
    return f"{GSD_LEAD} {step:g} m."


def with_gsd(prompt: str, gsd_m: float | None) -> str:
    """The question preceded by the GSD phrase (unchanged when the GSD is unknown)."""
    phrase = gsd_phrase(gsd_m)
    return f"{phrase} {prompt}" if phrase else prompt


# LLaVA-family checkpoints (no region module) get the region as box text in `{region}`, the way
# each was trained (mgimm_core/model/processing_mgimm.py `region_text` writes the box).
# GeoChat's region-captioning task word and phrasing; LLaVA-1.5's box-in-question form.
TEXT_REGION_PROMPTS = {
    "geochat": ("[identify] What is the object present at {region}",
                "[identify] Describe the object present at {region} and its surroundings in detail."),
    "box_text": ("What is the main object in the region {region} of this remote sensing image? Give its "
                 "name, colour and shape.",
                 "Describe the region {region} of this remote sensing image in detail."),
}

