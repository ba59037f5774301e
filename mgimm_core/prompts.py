"""The instructions the model is trained and queried with.

Training and the `describe` command import the same strings: a model answers best the questions it
was trained on (the demo model's word-level vocabulary knows exactly these words).
"""

# Stage 1, region-attribute alignment: the reference code's instruction, word for word.
ATTRIBUTE_PROMPT = ("Based on the provided region of the remote sensing image, describe the basic "
                    "attributes of the main objects in that region.")

# Stage 2, detailed description from region + global features.
DESCRIPTION_PROMPT = ("Describe the provided region of the remote sensing image in detail, including "
                      "the land cover and the attributes, counts and positions of the objects.")
