"""Processor: chips of any size, boxes and masks under the same transform, prompt expansion."""

import numpy as np
import pytest
import torch

from mgimm_core.errors import RegionError
from mgimm_core.model import ChipTransform, MGIMMProcessor, build_word_tokenizer, demo_region_settings, tiny_config
from mgimm_core.model.detokenize_mgimm import WordDetokenizer
from mgimm_core.model.testing_mgimm import random_chip, tiny_processor


def test_box_round_trip_through_the_chip_transform():
    transform = ChipTransform(chip_height=45, chip_width=70, image_size=32)
    boxes = np.array([[3.0, 4.0, 50.5, 44.0], [0.0, 0.0, 70.0, 45.0]])
    back = transform.boxes_to_chip(transform.boxes_to_input(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-9)
    assert transform.resized_shape == (21, 32)


def test_image_resized_keeping_aspect_and_padded_with_mean():
    config = tiny_config()
    processor = tiny_processor(config)
    chip = np.full((20, 40, 3), 255, dtype=np.uint8)
    pixels = processor.preprocess_image(chip)
    assert pixels.shape == (3, 32, 32)
    white = (1 - torch.tensor(config.image_mean)) / torch.tensor(config.image_std)
    torch.testing.assert_close(pixels[:, :16, :], white[:, None, None].expand(3, 16, 32))
    assert torch.all(pixels[:, 16:, :] == 0)  # padding is the mean colour


def test_read_only_chips_and_masks_are_taken_without_a_warning(monkeypatch):
    """A chip decoded from a request's image is read-only; torch warned of it in the server's log.
    torch warns once per process, so the arrays that reach torch.from_numpy are checked instead."""
    processor = tiny_processor(tiny_config())
    chip, mask = random_chip(20, 40), np.ones((20, 40), dtype=bool)
    chip.setflags(write=False)
    mask.setflags(write=False)
    handed, from_numpy = [], torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda array: (handed.append(array.flags.writeable), from_numpy(array))[1])
    pixels = processor.preprocess_image(chip)
    area = processor.preprocess_mask(mask, processor.chip_transform(chip.shape))
    assert handed == [True, True]
    monkeypatch.undo()
    torch.testing.assert_close(pixels, processor.preprocess_image(chip.copy()))
    assert area.sum() > 0


def test_mask_lands_where_its_box_lands():
    processor = tiny_processor(tiny_config())
    chip = random_chip(64, 128)
    mask = np.zeros((64, 128), dtype=bool)
    mask[16:48, 32:96] = True
    batch = processor(chip, boxes=np.array([[32, 16, 96, 48]]), masks=[mask])
    box = batch["region_boxes"][0, 0].tolist()
    assert box == [8.0, 4.0, 24.0, 12.0]
    ys, xs = np.nonzero(batch["region_masks"][0, 0].numpy())
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (8, 24, 4, 12)


@pytest.mark.parametrize("mode, expected", [("global", 4), ("region", 8), ("global_region", 12)])
def test_placeholder_expands_to_the_mode_token_count(mode, expected):
    config = tiny_config(**demo_region_settings(), global_tokens=4)
    processor = tiny_processor(config)
    batch = processor(random_chip(32, 32), boxes=np.array([[0, 0, 8, 8], [8, 8, 16, 16]]), mode=mode)
    assert int((batch["input_ids"] == config.image_token_id).sum()) == expected


def test_zero_regions_gives_global_only_tokens():
    config = tiny_config(global_tokens=4)
    processor = tiny_processor(config)
    batch = processor([random_chip(32, 32)], boxes=[np.zeros((0, 4))])
    assert batch["region_boxes"].shape == (1, 0, 4)
    assert int((batch["input_ids"] == config.image_token_id).sum()) == 4


def test_labels_cover_only_the_answer_and_padding_is_left():
    config = tiny_config(global_tokens=4)
    processor = tiny_processor(config)
    tok = processor.tokenizer
    batch = processor([random_chip(32, 32), random_chip(20, 30)], boxes=[np.array([[0, 0, 8, 8]]), None],
                      prompts=["describe the big region", "describe"], answers=["red car", "grey tank ."])
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert attention[1, 0] == 0 and attention[:, -1].all()  # left padding
    answer = tok("red car", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert labels[0][labels[0] != -100].tolist() == answer
    assert (labels[ids == config.image_token_id] == -100).all()
    assert (labels[attention == 0] == -100).all()


def test_invalid_boxes_raise_region_error_naming_the_region():
    processor = tiny_processor(tiny_config())
    with pytest.raises(RegionError, match="region 1"):
        processor(random_chip(32, 32), boxes=np.array([[0, 0, 8, 8], [10, 10, 5, 20]]))


def test_word_tokenizer_and_processor_save_load(tmp_path):
    tok = build_word_tokenizer(["red", "car"])
    assert tok.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>", "<image>", "red"]) == [0, 1, 2, 3, 4, 5]
    assert tok.decode(tok("Red car zebra", add_special_tokens=False)["input_ids"]) == "red car <unk>"
    processor = MGIMMProcessor.from_config(tiny_config(), tok)
    processor.save_pretrained(tmp_path)
    loaded = MGIMMProcessor.from_pretrained(tmp_path)
    chip = random_chip(24, 40)
    a = processor(chip, boxes=np.array([[1, 2, 20, 20]]), prompts="red car")
    b = loaded(chip, boxes=np.array([[1, 2, 20, 20]]), prompts="red car")
    for key in a:
        assert torch.equal(a[key], b[key])


def test_batch_decode_cuts_at_stop_string():
    processor = tiny_processor(tiny_config())
    ids = processor.tokenizer(["red car . grey tank", "white ship"], add_special_tokens=False)["input_ids"]
    assert processor.batch_decode(ids, stop_strings=["."]) == ["red car", "white ship"]


def test_word_detokenizer_rejoins_prose_and_restores_case():
    detok = WordDetokenizer(["L-shaped", "Y-shaped"])
    assert detok("the scene shows a built - up area . one l - shaped building lies in the south - east ; "
                 "2 . 5 m gsd , roads ( paved ) .") == (
        "The scene shows a built-up area. One L-shaped building lies in the south-east; 2.5 m gsd, "
        "roads (paved).")
    # a short attribute answer is not a sentence: no capital added
    assert detok("a medium - sized white y - shaped building") == "a medium-sized white Y-shaped building"


def test_word_detokenizer_inverts_the_demo_tokenizer_on_synthetic_texts():
    """Encoding then decoding a real synthetic description or attribute answer gives it back exactly."""
    from training.demo_data import generate_samples
    from training.demo_model import cased_words, words_of

    detok = WordDetokenizer(cased_words())
    samples = generate_samples([5, 9], scene_size=512, model_input=128, descriptions_per_scene=6)
    assert sum(s.kind == "description" for s in samples) == 12
    for s in samples:
        assert detok(" ".join(words_of(s.answer))) == s.answer


def test_processor_detokenizes_word_level_output_and_keeps_the_setting(tmp_path):
    tok = build_word_tokenizer(["one", "l", "-", "shaped", "building", "south", "east", "in", "the", "."])
    processor = MGIMMProcessor.from_config(tiny_config(), tok, word_detokenize=True, cased_words=["L-shaped"])
    processor.save_pretrained(tmp_path)
    loaded = MGIMMProcessor.from_pretrained(tmp_path)
    ids = tok(["one L-shaped building in the south-east."], add_special_tokens=False)["input_ids"]
    assert tok.batch_decode(ids) == ["one l - shaped building in the south - east ."]
    assert loaded.batch_decode(ids) == ["One L-shaped building in the south-east."]
    plain = MGIMMProcessor.from_config(tiny_config(), tok)
    assert plain.batch_decode(ids) == ["one l - shaped building in the south - east ."]
