"""SmolVLM2 (model_type smolvlm) and Idefics3 / SmolVLM v1 (idefics3): no grounding convention, so the
region reaches the model outlined on the chip (default) or as a crop (mgimm_core/families/smolvlm.py).

Every checkpoint is tiny and random, written by the test in the family's real on-disk format
(mgimm_core/model/testing_smolvlm.py); the yardstick is transformers' own class on inputs built with
the image processor's and tokenizer's own API, the image prompt from transformers' processing_smolvlm.
"""

from __future__ import annotations

import json

from tests.families import family_checks
import numpy as np
import pyogrio
import pytest
import shapely
import torch
from click.testing import CliRunner
from tests.families.family_checks import check_model_info, check_rows, describe, model_info, region_rows
from rasterio.transform import from_origin

from batch.cli import cli
from mgimm_core.engines import LoadOptions
from mgimm_core.errors import OptionsError
from mgimm_core.families import marks
from mgimm_core.families.regions import ModelSpace
from mgimm_core.model.testing_smolvlm import FORMATS, write_smolvlm
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.regions import AOIFeature, place_region, read_region
from mgimm_core.scene import Scene

TYPES = ("smolvlm", "idefics3")
#: The real tile sides (max_image_size.longest_edge = the vision tower's image_size): SmolVLM2-256M/500M 512,
#: Idefics3-8B-Llama3 364; with the patch side of a tiny tower that divides each.
REAL_TILES = {"smolvlm": (512, 64), "idefics3": (364, 91)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smolvlm")
    return {t: write_smolvlm(tmp / t, t, seed=i) for i, t in enumerate(TYPES)}


@pytest.fixture(scope="module", params=TYPES)
def real_tile(tmp_path_factory, request):
    """A folder of each family with its real tile side (tiny towers), for the round trip."""
    side, patch = REAL_TILES[request.param]
    directory, _ = write_smolvlm(tmp_path_factory.mktemp("tile") / request.param, request.param, image_size=side,
                                 patch_size=patch)
    return directory, side


def grey_chip(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A grey chip (no red pixel of its own), so red in the model's image can only be the outline."""
    rng = np.random.default_rng(seed)
    grey = rng.integers(40, 200, size=(h, w, 1), dtype=np.uint8)
    return np.repeat(grey, 3, axis=2)


# ------------------------------------------------------------------ a. model-info
@pytest.mark.parametrize("model_type", TYPES)
def test_model_info_recognises_the_folder(checkpoints, model_type):
    directory, reference = checkpoints[model_type]
    # the input size: one tile, max_image_size.longest_edge
    check_model_info(directory, reference, model_type, region_convention=None, region_as="outline",
                     region_ways=["outline", "crop"], region_method="outline drawn on the chip", input_size=32,
                     licence="Apache-2.0", non_commercial=False)
    text = CliRunner().invoke(cli, ["model-info", str(directory)]).output
    assert "outline drawn on the chip" in text and "--region-as     outline, crop (default outline)" in text


def test_chip_size_is_the_tile_and_licence_comes_from_the_card(real_tile, tmp_path, checkpoints):
    directory, side = real_tile
    assert ModelDirectory.resolve(directory).chip.input_size == side
    directory, _ = checkpoints["idefics3"]
    copy = tmp_path / "Idefics3-8B-Llama3"
    copy.mkdir()
    for f in directory.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["vocab_size"] = 128_259           # Llama 3.1's vocabulary: the Llama licence too
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# Idefics3\n")
    info = model_info(copy)
    assert info["licence"] == "apache-2.0" and "Llama 3.1" in ModelDirectory.resolve(copy).family.licence(
        ModelDirectory.resolve(copy).kind).note


def test_folders_saved_by_transformers_4_load(checkpoints, tmp_path):
    """The layout of the SmolVLM2 / Idefics3 downloads (saved before transformers 5): the image processor
    in preprocessor_config.json, processor_config.json holding image_seq_len, chat_template.json."""
    from mgimm_core.describer import load_describer

    directory, _ = checkpoints["smolvlm"]
    legacy = tmp_path / "SmolVLM2-legacy"
    legacy.mkdir()
    for f in directory.iterdir():
        if f.name not in ("processor_config.json", "chat_template.jinja"):
            (legacy / f.name).write_bytes(f.read_bytes())
    nested = json.loads((directory / "processor_config.json").read_text())
    image = dict(nested.pop("image_processor"), processor_class="SmolVLMProcessor", max_image_size={"longest_edge": 16})
    (legacy / "preprocessor_config.json").write_text(json.dumps(image))
    (legacy / "processor_config.json").write_text(json.dumps(nested))
    template = (directory / "chat_template.jinja").read_text()
    (legacy / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    assert model_info(legacy)["input_size"] == 16
    describer = load_describer(legacy, options=LoadOptions(device="cpu"))
    processor = describer.processor
    assert processor.image_seq_len == 4 and processor.chat_template == template
    assert describer.family.model_space(processor, 40, 40) == ModelSpace(16, 16)


# ------------------------------------------------------------------ b. logits equal transformers'
def reference_inputs(directory, model_type: str, image: np.ndarray, question: str):
    """Inputs built without the family module: the image processor's and tokenizer's own API, the
    chat written as the folder's template renders it, the image prompt from transformers' smolvlm code."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    image_processor = AutoImageProcessor.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    seq_len = json.loads((directory / "processor_config.json").read_text())["image_seq_len"]
    pixels = image_processor(images=[[Image.fromarray(image)]], do_image_splitting=False, return_tensors="pt")
    image_text = get_image_prompt_string(0, 0, seq_len, fake_token_around_image="<fake_token_around_image>",
                                         image_token="<image>", global_image_token="<global-img>")
    text = f"{FORMATS[model_type].bos}User:{image_text}{question}<end_of_utterance>\nAssistant:"
    ids = tokenizer(text, return_tensors="pt")
    return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
            "pixel_values": pixels["pixel_values"], "pixel_attention_mask": pixels["pixel_attention_mask"]}


@pytest.mark.parametrize("model_type", TYPES)
def test_logits_equal_transformers_own_class(checkpoints, model_type):
    import transformers

    from mgimm_core.describer import load_describer
    from mgimm_core.model.vlm_describer import _pil

    directory, _ = checkpoints[model_type]
    describer = load_describer(directory, options=LoadOptions(device="cpu"))
    family, processor = describer.family, describer.processor
    chip = grey_chip(32, 32, seed=3)
    mask = np.zeros((32, 32), dtype=bool)
    mask[6:20, 9:27] = True
    view = describer.view(chip, (9, 6, 27, 20), mask)
    question = family.attribute_question(view.region)
    ours_inputs = family.model_inputs(processor, [_pil(view.image)], [family.chat_text(processor, question)])
    theirs_inputs = reference_inputs(directory, model_type, view.image, question)
    assert ours_inputs["input_ids"].tolist() == theirs_inputs["input_ids"].tolist()
    reference = getattr(transformers, FORMATS[model_type].model_class).from_pretrained(directory).eval()
    with torch.no_grad():
        ours = describer.model(**ours_inputs).logits
        theirs = reference(**theirs_inputs).logits
        other = reference(**reference_inputs(directory, model_type, grey_chip(32, 32, seed=9), question)).logits
    diff = (ours - theirs).abs().max().item()
    print(f"{model_type}: logits max abs diff {diff:.3g}")
    assert ours.dtype == torch.float32 and diff < 1e-4
    assert (other - theirs).abs().max().item() > 1e-3          # the image reaches the logits


# ------------------------------------------------------------------ c. golden round trip
def red_extent(pixel_values: torch.Tensor) -> tuple[float, float, float, float]:
    """Pixel-edge extent (x1, y1, x2, y2) of the red pixels in the model's image (mean/std 0.5)."""
    rgb = pixel_values.reshape(-1, *pixel_values.shape[-3:])[0].numpy() * 0.5 + 0.5
    red = (rgb[0] > 0.75) & (rgb[1] < 0.35) & (rgb[2] < 0.35)
    rows, cols = np.nonzero(red)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def test_round_trip_map_polygon_to_model_space_and_back(make_raster, real_tile):
    """A map polygon -> its outline in the image the model sees (through the family's processor, for
    chips it resizes: every chip smaller than the tile, square or not) -> chip pixels (the
    family's model_space) -> map coordinates: within half a chip pixel."""
    from mgimm_core.describer import load_describer

    directory, side = real_tile
    res, origin = 0.5, (600_000.0, 5_000_000.0)
    size = 320
    grey = np.random.default_rng(1).integers(40, 200, size=(1, size, size), dtype=np.uint8)
    scene = Scene.open(make_raster(width=size, height=size, res=res, origin=origin, data=np.repeat(grey, 3, 0)))
    describer = load_describer(directory, options=LoadOptions(device="cpu"))
    family, processor = describer.family, describer.processor
    settings = ModelDirectory.resolve(directory).chip
    transform = from_origin(*origin, res, res)
    worst = 0.0
    # rectangles, an L and an octagon (slanted edges), their extremes along scene pixel edges: a pixel
    # centre lies half a pixel inside each, so the drawn outline spans exactly the polygon's bounds
    shapes = [[(10, 12), (31, 12), (31, 25), (10, 25)], [(100, 40), (230, 40), (230, 101), (100, 101)],
              [(50, 150), (257, 150), (257, 300), (50, 300)], [(20, 200), (90, 200), (90, 230), (45, 230),
                                                               (45, 285), (20, 285)],
              [(230, 200), (260, 200), (285, 225), (285, 255), (260, 280), (230, 280), (205, 255), (205, 225)]]
    for i, ring in enumerate(shapes):
        polygon = shapely.Polygon([transform @ p for p in ring])
        placement = place_region(scene, AOIFeature(str(i), polygon, scene.crs), settings)
        chip = read_region(scene, placement)
        h, w = chip.image.shape[:2]
        assert (h, w) != (side, side)                # the processor resizes each of these chips
        # the whole chip, and a non-square part of it holding the region
        top = int(np.floor(placement.box[1]))
        for offset, image, mask in ((0, chip.image, chip.mask), (top, chip.image[top:], chip.mask[top:])):
            outlined = marks.outline(image, placement.box, mask)
            inputs = family.model_inputs(processor, [as_pil(outlined)], [family.chat_text(processor, "q")])
            space = family.model_space(processor, image.shape[1], image.shape[0])
            assert tuple(inputs["pixel_values"].shape[-2:]) == (space.height, space.width)
            x1, y1, x2, y2 = red_extent(inputs["pixel_values"])
            sx, sy = image.shape[1] / space.width, image.shape[0] / space.height
            # model space -> chip pixels -> scene pixels -> map
            chip_box = (x1 * sx, y1 * sy + offset, x2 * sx, y2 * sy + offset)
            scale, window = placement.scale, placement.window
            corners = [scene.transform @ (window.col_off + cx * scale, window.row_off + cy * scale)
                       for cx, cy in ((chip_box[0], chip_box[1]), (chip_box[2], chip_box[3]))]
            back = (min(c[0] for c in corners), min(c[1] for c in corners),
                    max(c[0] for c in corners), max(c[1] for c in corners))
            error = max(abs(a - b) for a, b in zip(back, polygon.bounds)) / (res * scale)
            worst = max(worst, error)
            assert error <= 0.5, (i, offset, back, polygon.bounds, error)
    print(f"{family.name} round trip: worst error {worst:.3f} chip pixels")


def as_pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(array))


# ------------------------------------------------------------------ e. the region reaches the model
@pytest.fixture
def spied(checkpoints, monkeypatch):
    """The images and prompt texts the processor gets, for every family's model_inputs/chat_text."""
    from mgimm_core.families import family

    seen: dict = {"images": [], "texts": []}
    for name in TYPES:
        fam = family(name)
        inputs, chat = fam.model_inputs, fam.chat_text

        def model_inputs(processor, images, texts, _inputs=inputs):
            seen["images"].extend(np.asarray(i) for i in images)
            return _inputs(processor, images, texts)

        def chat_text(processor, question, _chat=chat):
            text = _chat(processor, question)
            seen["texts"].append(text)
            return text

        monkeypatch.setattr(fam, "model_inputs", model_inputs)
        monkeypatch.setattr(fam, "chat_text", chat_text)
    return seen


@pytest.mark.parametrize("model_type", TYPES)
def test_outline_reaches_the_model_on_the_polygons_boundary(checkpoints, spied, model_type):
    from mgimm_core.describer import load_describer

    describer = load_describer(checkpoints[model_type][0], options=LoadOptions(device="cpu", max_new_tokens=2))
    chip = grey_chip(32, 32, seed=4)
    mask = np.zeros((32, 32), dtype=bool)
    mask[5:21, 8:26] = True
    mask[5:12, 8:14] = False                      # an L-shape: its boundary is not its box's
    describer.describe([chip], [(8, 5, 26, 21)], [mask])
    assert len(spied["images"]) == 2              # the attribute and the description question
    for image in spied["images"]:
        red = np.all(image == marks.OUTLINE_RGB, axis=2)
        edge = mask & ~(np.pad(mask, 1)[:-2, 1:-1] & np.pad(mask, 1)[2:, 1:-1]
                        & np.pad(mask, 1)[1:-1, :-2] & np.pad(mask, 1)[1:-1, 2:])
        assert np.array_equal(red, edge)          # red exactly on the polygon's boundary pixels
        assert np.array_equal(image[~red], chip[~red])
    assert all("outlined in red" in text and "<image>" in text for text in spied["texts"])


def test_crop_sends_the_cropped_chip(checkpoints, spied):
    from mgimm_core.describer import load_describer

    describer = load_describer(checkpoints["smolvlm"][0],
                               options=LoadOptions(device="cpu", max_new_tokens=2, region_as="crop"))
    chip = grey_chip(32, 32, seed=5)
    describer.describe([chip], [(10.0, 4.0, 20.0, 24.0)], [None])
    # a square around the box: its larger side (20 px) and 10% of it (2 px) on each side, so that the
    # processor's resize to the square tile does not stretch the region
    assert spied["images"] and all(np.array_equal(image, chip[2:26, 3:27]) for image in spied["images"])
    assert all("outlined" not in text for text in spied["texts"])


def test_square_crops_stay_inside_the_chip():
    chip = grey_chip(40, 60, seed=6)
    near_edge = marks.crop(chip, (50.0, 10.0, 58.0, 30.0), square=True)     # 20 px tall, 2 px margins
    assert np.array_equal(near_edge, chip[8:32, 36:60])                    # shifted left to fit
    wide = marks.crop(chip, (2.0, 5.0, 58.0, 15.0), square=True)           # wider than the chip is tall
    assert np.array_equal(wide, chip[:, :])


def test_a_way_the_family_cannot_take_is_refused():
    from mgimm_core.families import family

    with pytest.raises(OptionsError, match="outline, crop") as caught:
        family("smolvlm").check_region_as("text")
    assert caught.value.option == "region_as"


# ------------------------------------------------------------------ d. describe through the one loop
@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    return family_checks.demo_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.mark.parametrize("model_type,region_as", [("smolvlm", None), ("idefics3", None), ("smolvlm", "crop")])
def test_describe_writes_rows_from_generate(tmp_path, checkpoints, demo_inputs, monkeypatch, model_type, region_as):
    from mgimm_core.model.vlm_describer import VLMDescriber

    answers: list[str] = []
    generate = VLMDescriber.generate

    def spy(self, images, questions, json_form=False, scored=False):
        out = generate(self, images, questions, json_form, scored)
        answers.extend(answer.text for answer in out)
        return out

    monkeypatch.setattr(VLMDescriber, "generate", spy)
    directory, _ = checkpoints[model_type]
    out = tmp_path / "out.gpkg"
    result = describe(out, demo_inputs, directory, *(["--region-as", region_as] if region_as else []),
                      max_new_tokens=6)
    assert result.exit_code in (0, 3), result.output
    rows = region_rows(out)
    check_rows(rows, directory, 3)
    assert all(row["description"] in answers for row in rows)
    assert (result.exit_code == 3) == any(r["error_code"] for r in rows)
    runs = pyogrio.read_dataframe(str(out), layer="runs")
    assert json.loads(runs["parameters"].iloc[-1])["region_as"] == (region_as or "outline")


def test_describe_refuses_a_region_way_the_family_cannot_take(tmp_path, checkpoints, demo_inputs):
    out = tmp_path / "out.gpkg"
    result = describe(out, demo_inputs, checkpoints["smolvlm"][0], "--region-as", "text", max_new_tokens=6)
    assert result.exit_code == 2 and "--region-as" in result.output and "outline, crop" in result.output
    assert not out.exists()


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_worker_and_server_refuse_it_at_start(checkpoints, command):
    result = CliRunner().invoke(cli, [command, "--model", str(checkpoints["idefics3"][0]), "--region-as", "text"])
    assert result.exit_code == 2 and "outline, crop" in result.output


def test_python_api_takes_region_as(checkpoints, demo_inputs):
    import mgimm_core

    with pytest.raises(OptionsError, match="outline, crop"):
        mgimm_core.describe(str(demo_inputs.scene), str(demo_inputs.aoi), model=str(checkpoints["smolvlm"][0]),
                            region_as="text", device="cpu")
    engine = mgimm_core.load_model(str(checkpoints["smolvlm"][0]), device="cpu", region_as="crop")
    assert engine.load.region_as == "crop"


def test_service_describes_with_the_region_way_and_records_it(checkpoints, make_raster, tmp_path, spied):
    """The worker's and server's handlers (mgimm_core.service) with --region-as crop: square crops reach
    the model, the row comes from it, and the runs table says crop."""
    from mgimm_core.service import Service
    from tests.service.test_service import INSIDE, UTM

    service = Service(str(checkpoints["idefics3"][0]),
                      load=LoadOptions(device="cpu", max_new_tokens=4, region_as="crop"))
    out = tmp_path / "out.gpkg"
    result = service.handle("describe", {"raster": make_raster(crs=UTM), "crs": "EPSG:4326", "output": str(out),
                                         "regions": [{"id": "a", "wkt": INSIDE}], "thumbnail": False})
    (entry,) = result["regions"]
    assert entry["description"] is not None
    assert spied["images"] and all(image.shape[0] == image.shape[1] < 32 for image in spied["images"])
    runs = pyogrio.read_dataframe(str(out), layer="runs")
    assert json.loads(runs["parameters"].iloc[-1])["region_as"] == "crop"
