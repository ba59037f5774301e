"""Dataset readers: reference files as they are, the project JSONL format, bad-record handling.

Images are real files written with rasterio (PNG like DIOR's chips, GeoTIFF like the synthetic
world's); the readers only check they exist, except the question file, which reads sizes from them.
"""

import json
import logging

import pytest

from training.data import (DESCRIPTION_INSTRUCTION, REGION_INSTRUCTION, BadRecordError, ChipRecord,
                           RegionRecord, read_chip_records, read_coco_captions,
                           read_description_file, read_question_file, read_region_file,
                           write_chip_records)


@pytest.fixture
def images(make_raster):
    """Two images in tmp_path: a.png (80 x 60 px) and b.png (40 x 40 px)."""
    make_raster("a.png", width=80, height=60, driver="PNG", crs=None)
    make_raster("b.png", width=40, height=40, driver="PNG", crs=None)


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def region_file(tmp_path, annotations, images=None):
    images = images or [{"id": 1, "file_name": "a.png", "width": 80, "height": 60},
                        {"id": 2, "file_name": "b.png", "width": 40, "height": 40}]
    return write_json(tmp_path / "regions.json", {"images": images, "annotations": annotations})


GOOD_ANN = {"image_id": 1, "bbox": [10, 5, 20, 30], "caption": "a red rectangular building",
            "id": 7}

# One bad annotation per reason, each next to a good one.
BAD_ANNOTATIONS = {
    "box_outside_image": {"image_id": 2, "bbox": [30, 30, 20, 20], "caption": "x"},
    "degenerate_box": {"image_id": 2, "bbox": [5, 5, 0, 10], "caption": "x"},
    "empty_text": {"image_id": 2, "bbox": [5, 5, 10, 10], "caption": "   "},
    "unknown_image_id": {"image_id": 99, "bbox": [5, 5, 10, 10], "caption": "x"},
    "malformed_record": {"image_id": 2, "bbox": [5, 5, 10], "caption": "x"},
}


def test_region_file_converts_xywh_to_xyxy_pixels(tmp_path, images):
    result = read_region_file(region_file(tmp_path, [GOOD_ANN]))
    (sample,) = result.regions
    assert sample.boxes_xyxy == [(10.0, 5.0, 30.0, 35.0)]
    assert (sample.width, sample.height) == (80, 60)
    assert sample.image_path == str(tmp_path / "a.png")
    assert sample.prompt == REGION_INSTRUCTION
    assert sample.answer == "a red rectangular building"
    assert sample.source_id == "1:7"
    assert sample.attributes is None and sample.polygons is None
    assert result.report.kept == 1 and result.report.total_skipped == 0


def test_region_file_reads_coco_polygon_segmentation(tmp_path, images):
    ann = dict(GOOD_ANN, segmentation=[[10, 5, 30, 5, 30, 35, 10, 35]])
    (sample,) = read_region_file(region_file(tmp_path, [ann])).regions
    assert sample.polygons == [((10.0, 5.0), (30.0, 5.0), (30.0, 35.0), (10.0, 35.0))]


def test_box_overhanging_by_less_than_tolerance_is_clipped(tmp_path, images):
    ann = dict(GOOD_ANN, bbox=[-0.5, 40, 81.0, 20.5])
    (sample,) = read_region_file(region_file(tmp_path, [ann])).regions
    assert sample.boxes_xyxy == [(0.0, 40.0, 80.0, 60.0)]


@pytest.mark.parametrize("reason", sorted(BAD_ANNOTATIONS))
def test_region_file_bad_record_raises_naming_file_record_and_fix(tmp_path, images, reason):
    path = region_file(tmp_path, [GOOD_ANN, BAD_ANNOTATIONS[reason]])
    with pytest.raises(BadRecordError) as info:
        read_region_file(path)
    err = info.value
    assert err.reason == reason
    assert isinstance(err, ValueError)
    message = str(err)
    assert "regions.json" in message and "annotation 1" in message and "fix:" in message


@pytest.mark.parametrize("reason", sorted(BAD_ANNOTATIONS))
def test_region_file_bad_record_skipped_and_counted(tmp_path, images, reason, caplog):
    path = region_file(tmp_path, [GOOD_ANN, BAD_ANNOTATIONS[reason], GOOD_ANN])
    with caplog.at_level(logging.WARNING, logger="training.data.validate"):
        result = read_region_file(path, on_bad="skip")
    assert len(result.regions) == 2
    assert dict(result.report.skipped) == {reason: 1}
    assert result.report.as_dict()["kept"] == 2
    assert reason in caplog.text


def test_missing_image_raises_and_skips_every_annotation_on_it(tmp_path, images):
    imgs = [{"id": 1, "file_name": "a.png", "width": 80, "height": 60},
            {"id": 3, "file_name": "gone.png", "width": 80, "height": 60}]
    lost = dict(GOOD_ANN, image_id=3)
    path = region_file(tmp_path, [GOOD_ANN, lost, lost], images=imgs)
    with pytest.raises(BadRecordError, match=r"gone\.png does not exist") as info:
        read_region_file(path)
    assert info.value.reason == "missing_image"
    result = read_region_file(path, on_bad="skip")
    assert len(result.regions) == 1 and dict(result.report.skipped) == {"missing_image": 2}
    # Without the existence check the records are kept (e.g. images on another machine).
    assert len(read_region_file(path, check_images=False).regions) == 3


def test_image_root_overrides_annotation_folder(tmp_path, make_raster):
    (tmp_path / "ann").mkdir()
    make_raster("a.png", width=80, height=60, driver="PNG", crs=None)
    path = write_json(tmp_path / "ann" / "regions.json", {
        "images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}],
        "annotations": [GOOD_ANN]})
    with pytest.raises(BadRecordError):
        read_region_file(path)
    assert len(read_region_file(path, image_root=tmp_path).regions) == 1


def test_unknown_on_bad_value_is_rejected(tmp_path, images):
    with pytest.raises(ValueError, match="on_bad"):
        read_region_file(region_file(tmp_path, [GOOD_ANN]), on_bad="ignore")


def description_entry(**changes):
    entry = {"image_id": 5, "file_name": "a.png", "width": 80, "height": 60,
             "bbox": [[0, 0, 10, 10], [50, 20, 30, 40]],
             "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                               {"from": "gpt", "value": "Two buildings stand by a road."}]}
    entry.update(changes)
    return entry


def test_description_file_reads_boxes_prompt_and_answer(tmp_path, images):
    turns = description_entry()["conversations"] + [
        {"from": "human", "value": "How many?"}, {"from": "gpt", "value": "Two."}]
    path = write_json(tmp_path / "desc.json", [description_entry(conversations=turns)])
    (sample,) = read_description_file(path).descriptions
    assert sample.boxes_xyxy == [(0.0, 0.0, 10.0, 10.0), (50.0, 20.0, 80.0, 60.0)]
    assert sample.prompt == "Describe the image."
    assert sample.answer == "Two buildings stand by a road."
    assert sample.turns[1] == ("How many?", "Two.")
    assert sample.source_id == "5"


BAD_DESCRIPTIONS = {
    "missing_image": description_entry(file_name="nope.png"),
    "box_outside_image": description_entry(bbox=[[0, 0, 10, 10], [70, 0, 20, 10]]),
    "degenerate_box": description_entry(bbox=[[0, 0, -3, 10]]),
    "empty_text": description_entry(conversations=[{"from": "human", "value": "<image>\nHi"},
                                                   {"from": "gpt", "value": ""}]),
}


@pytest.mark.parametrize("reason", sorted(BAD_DESCRIPTIONS))
def test_description_file_bad_entry_raise_or_skip(tmp_path, images, reason):
    path = write_json(tmp_path / "desc.json", [description_entry(), BAD_DESCRIPTIONS[reason]])
    with pytest.raises(BadRecordError, match=r"desc\.json: entry 1 \(image_id 5\)") as info:
        read_description_file(path)
    assert info.value.reason == reason
    result = read_description_file(path, on_bad="skip")
    assert len(result.descriptions) == 1
    assert dict(result.report.skipped) == {reason: 1}


def test_question_file_reads_size_from_image_when_absent(tmp_path, images):
    path = write_json(tmp_path / "questions.json", [
        {"image_id": 1, "file_name": "b.png", "text": "<image>\nDescribe.", "bbox": [[1, 2, 3, 4]]},
        {"image_id": 2, "file_name": "a.png", "width": 80, "height": 60, "text": "Describe.",
         "bbox": []}])
    questions, report = read_question_file(path)
    assert [(q.width, q.height) for q in questions] == [(40, 40), (80, 60)]
    assert questions[0].boxes_xyxy == [(1.0, 2.0, 4.0, 6.0)]
    assert questions[0].prompt == "Describe." and questions[0].image_id == "1"
    assert report.kept == 2


def test_coco_captions_group_by_image_and_reject_uncaptioned_images(tmp_path):
    data = {"images": [{"id": 1}, {"id": 2}],
            "annotations": [{"image_id": 1, "id": 1, "caption": "a"},
                            {"image_id": 1, "id": 2, "caption": "b"},
                            {"image_id": 2, "id": 3, "caption": "c"}]}
    assert read_coco_captions(write_json(tmp_path / "gt.json", data)) == {"1": ["a", "b"],
                                                                          "2": ["c"]}
    data["images"].append({"id": 3})
    with pytest.raises(BadRecordError, match="image 3"):
        read_coco_captions(write_json(tmp_path / "gt.json", data))


def chips():
    return [
        ChipRecord("a.png", 80, 60, regions=[
            RegionRecord([10, 5, 20, 30], "red rectangular building",
                         polygon=[[10, 5], [30, 5], [30, 35]],
                         attributes={"name": "building", "colour": "red", "shape": "rectangular"}),
            RegionRecord([40, 40, 10, 10], "white round storage tank")],
            description="A red building and a white storage tank."),
        ChipRecord("b.png", 40, 40, regions=[RegionRecord([0, 0, 5, 8], "grey vehicle")]),
    ]


def test_project_jsonl_round_trip(tmp_path, images):
    path = tmp_path / "chips.jsonl"
    assert write_chip_records(path, chips()) == 2
    result = read_chip_records(path)
    assert [r.answer for r in result.regions] == ["red rectangular building",
                                                  "white round storage tank", "grey vehicle"]
    first = result.regions[0]
    assert first.boxes_xyxy == [(10.0, 5.0, 30.0, 35.0)]
    assert first.attributes == {"name": "building", "colour": "red", "shape": "rectangular"}
    assert first.polygons == [((10.0, 5.0), (30.0, 5.0), (30.0, 35.0))]
    assert result.regions[1].attributes is None and result.regions[1].polygons is None
    (desc,) = result.descriptions
    assert desc.prompt == DESCRIPTION_INSTRUCTION
    assert desc.boxes_xyxy == [(10.0, 5.0, 30.0, 35.0), (40.0, 40.0, 50.0, 50.0)]
    assert desc.polygons == [((10.0, 5.0), (30.0, 5.0), (30.0, 35.0)), None]
    assert result.report.kept == 4


def test_project_jsonl_bad_region_drops_only_that_region(tmp_path, images):
    records = [c.to_json() for c in chips()]
    records[0]["regions"][1]["bbox"] = [75, 40, 10, 10]  # past the right edge of the 80 px image
    path = tmp_path / "chips.jsonl"
    write_chip_records(path, records)
    with pytest.raises(BadRecordError, match=r"chips\.jsonl: line 1 region 1") as info:
        read_chip_records(path)
    assert info.value.reason == "box_outside_image"
    result = read_chip_records(path, on_bad="skip")
    assert len(result.regions) == 2
    assert result.descriptions[0].boxes_xyxy == [(10.0, 5.0, 30.0, 35.0)]
    assert dict(result.report.skipped) == {"box_outside_image": 1}


def test_project_jsonl_bad_chips_skipped_per_reason(tmp_path, images):
    records = [c.to_json() for c in chips()]
    records.append(dict(records[1], image="missing.png"))
    records.append(dict(records[0], description=" "))
    records[1]["regions"][0]["caption"] = ""
    path = tmp_path / "chips.jsonl"
    write_chip_records(path, records)
    with open(path, "a") as f:
        f.write("{not json\n")
    result = read_chip_records(path, on_bad="skip")
    assert dict(result.report.skipped) == {"missing_image": 1, "empty_text": 2,
                                           "malformed_record": 1}
    # chip 1: 2 regions + description; chip 2: nothing; chip 4: 2 regions, no description.
    assert len(result.regions) == 4 and len(result.descriptions) == 1
