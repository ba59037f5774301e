"""Checks every model family's tests make (tests/families/test_family_*.py, tests/families/test_llava_models.py): model-info
on a folder, `describe` on the demo inputs and the rows it writes, transformers' own processor, and the
map -> model box -> map round trip. Not a test module: the family tests import it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import shapely
import torch
from click.testing import CliRunner, Result

from batch.cli import cli
from mgimm_core.regions import AOIFeature, ChipSettings, place_region
from mgimm_core.scene import Scene


# ------------------------------------------------------------------ model-info
def model_info(directory) -> dict:
    """model-info --json of the folder (exit 0)."""
    result = CliRunner().invoke(cli, ["model-info", str(directory), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def check_model_info(directory, reference, family: str, extra_tensors: int = 0, **expected) -> dict:
    """model-info recognises the folder as `family`, counts the reference model's parameters (plus
    `extra_tensors` values of stored buffers) and states each of `expected` (model-info's JSON keys);
    returns the JSON for the family's own checks."""
    info = model_info(directory)
    assert info["family"] == family, info
    assert info["parameters"] == sum(p.numel() for p in reference.parameters()) + extra_tensors
    for key, value in expected.items():
        assert info[key] == value, (key, info[key], value)
    return info


# ------------------------------------------------------------------ describe
def demo_inputs(directory: Path, objects: int = 2):
    """The synthetic scene and AOI the family tests describe (`objects` + 1 regions)."""
    from training.synthetic.demo_inputs import write_demo_inputs

    return write_demo_inputs(directory, seed=5, size=256, objects=objects)


def describe(out: Path, inputs, directory, *extra: str, max_new_tokens: int) -> Result:
    """`describe` of the demo inputs with the folder's model on the CPU, into `out`."""
    return CliRunner().invoke(cli, ["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "-o", str(out),
                                    "--model", str(directory), "--device", "cpu", "--max-new-tokens",
                                    str(max_new_tokens), "-q", *extra], catch_exceptions=False)


def region_rows(out: Path) -> list[dict]:
    """The rows of the output's regions layer, as dicts."""
    meta, _, _, values = pyogrio.raw.read(str(out), layer="regions")
    return [dict(zip(meta["fields"], row)) for row in zip(*values)]


def check_rows(rows: list[dict], directory, count: int) -> None:
    """`count` rows, each from the folder's model, each with a description (generated: gibberish from random
    weights) and an object or the invalid_answer code; a row naming an object has its object_p."""
    assert len(rows) == count and {r["model"] for r in rows} == {Path(directory).name}
    for row in rows:
        assert row["description"], row
        assert row["object"] or row["error_code"] == "invalid_answer", row
        if row["object"] and row["object"] != "none":
            assert 0 < row["object_p"] <= 1, row


def describe_rows(tmp_path: Path, directory, *extra: str, max_new_tokens: int, objects: int = 2) -> list[dict]:
    """`describe` of fresh demo inputs with the folder's model: exit 0 (or 3, invalid answers) and
    `check_rows` of its `objects` + 1 rows; returns the rows."""
    inputs = demo_inputs(tmp_path / "inputs", objects)
    out = tmp_path / "out.gpkg"
    result = describe(out, inputs, directory, *extra, max_new_tokens=max_new_tokens)
    assert result.exit_code in (0, 3), result.output
    rows = region_rows(out)
    check_rows(rows, directory, objects + 1)
    return rows


def check_chosen_logprobs(describer, chip: np.ndarray, box, json_form: bool) -> None:
    """object_p's input (mgimm_core/model/vlm_describer.py `ChosenLogprobs`): the tokens of an answer
    and the log probability each was chosen with equal transformers' own record of the same
    generate (`output_scores`: the processed scores, JSON constraint included)."""
    import torch
    from PIL import Image

    family, processor = describer.family, describer.processor
    view = describer.view(chip, box, None)
    question = family.attribute_question(view.region) if json_form else family.description_question(view.region, None)
    (answer,) = describer.generate([view.image], [question], json_form=json_form, scored=True)
    inputs = family.model_inputs(processor, [Image.fromarray(view.image)], [family.chat_text(processor, question)])
    processors = []
    if json_form:
        start = 1 if family.encoder_decoder else inputs["input_ids"].shape[1]
        processors.append(describer._json_constraint(start))
    with torch.no_grad():
        out = describer.model.generate(**inputs, max_new_tokens=describer.max_new_tokens, do_sample=False,
                                       output_scores=True, return_dict_in_generate=True,
                                       logits_processor=processors)
    ids = family.answer_ids(out.sequences, inputs)[0].tolist()
    theirs = [torch.log_softmax(scores[0].float(), -1)[token].item() for scores, token in zip(out.scores, ids)]
    assert answer.ids == ids and len(answer.logprobs) == len(theirs) > 0
    assert np.allclose(answer.logprobs, theirs, atol=1e-5), (answer.logprobs, theirs)


# ------------------------------------------------------------------ logits
def transformers_processor(directory, processor_class):
    """transformers' own processor for the folder, as a user would build it: AutoProcessor, or, where
    torchvision is missing (it builds the video processor), the same class without its video part."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return AutoProcessor.from_pretrained(directory)
    names = [n for n in processor_class.get_attributes() if n != "video_processor"]
    return type("ImagesOnly", (processor_class,), {"get_attributes": classmethod(lambda cls: names)}
                ).from_pretrained(directory)


def transformers_logits(directory, processor_class, model_class, image: np.ndarray, question: str):
    """transformers' own path for one chip and question: the processor's chat API builds the inputs
    (`transformers_processor`), `model_class.from_pretrained` (fp32, eval) gives the logits. Returns
    (logits, inputs)."""
    from PIL import Image

    processor = transformers_processor(directory, processor_class)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.fromarray(image)},
                                             {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    reference = model_class.from_pretrained(directory).eval()
    with torch.no_grad():
        return reference(**inputs).logits, inputs


# ------------------------------------------------------------------ golden round trip
def box_codec(fam, processor, parse):
    """(to_model, from_model) for `map_round_trip`: a chip box written as the family's region text and
    read back as numbers by `parse`; those numbers decoded, in the model's space, to a chip box."""
    convention = fam.region_convention()

    def to_model(box, w, h):
        return parse(fam.region_text(processor, box, w, h))

    def from_model(values, w, h):
        return convention.decode(values, w, h, fam.model_space(processor, w, h))

    return to_model, from_model


def map_round_trip(scene_path, polygons, aoi_crs, chip_sizes, to_model, from_model):
    """Worst error, in chip pixels, of map polygon -> chip box (geo core) -> model's numbers (to_model) ->
    chip box (from_model) -> map coordinates, against the polygon's bounds in the scene CRS."""
    worst = 0.0
    with Scene.open(scene_path) as scene:
        to_scene = pyproj.Transformer.from_crs(aoi_crs, scene.crs, always_xy=True)
        t = scene.transform
        for size in chip_sizes:
            for i, polygon in enumerate(polygons):
                feature = AOIFeature(str(i), polygon, pyproj.CRS(aoi_crs))
                placement = place_region(scene, feature, ChipSettings(input_size=size, context=0.25, min_window=16))
                h, w = placement.out_shape
                x1, y1, x2, y2 = from_model(to_model(placement.box, w, h), w, h)
                off_x, off_y, scale = placement.window.col_off, placement.window.row_off, placement.scale
                corners = [t @ (off_x + x1 * scale, off_y + y1 * scale), t @ (off_x + x2 * scale, off_y + y2 * scale)]
                back = (min(c[0] for c in corners), min(c[1] for c in corners),
                        max(c[0] for c in corners), max(c[1] for c in corners))
                truth = placement.geometry.bounds
                expected = shapely.transform(polygon, lambda xy: np.column_stack(to_scene.transform(*xy.T))).bounds
                assert np.allclose(truth, expected, atol=abs(t.a) * 1e-6)
                chip_pixel = abs(t.a) * placement.scale
                worst = max(worst, max(abs(a - b) for a, b in zip(back, truth)) / chip_pixel)
    return worst


def polygons_on_scene(make_raster):
    """A 300 x 300 UTM scene (10 m pixels) and polygons on it given in lon/lat, of several sizes:
    (scene path, polygons)."""
    path = make_raster(width=300, height=300, res=10.0)
    with Scene.open(path) as scene:
        to_lonlat = pyproj.Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True)
        t = scene.transform
        polygons = []
        for (c, r, dc, dr) in [(40.3, 50.7, 12.2, 7.9), (100.1, 120.6, 55.5, 80.25), (200.7, 30.2, 3.3, 4.1),
                               (150.45, 200.15, 90.3, 60.6)]:
            ring = [(c, r), (c + dc, r + 0.3 * dr), (c + 0.8 * dc, r + dr), (c + 0.1 * dc, r + 0.7 * dr)]
            world = shapely.Polygon([t @ p for p in ring])
            polygons.append(shapely.transform(world, lambda xy: np.column_stack(to_lonlat.transform(*xy.T))))
    return path, polygons
