"""Generation: batched greedy equals one-at-a-time greedy; stop strings; sampling; zero regions."""

import numpy as np
import pytest
import torch

from mgimm_core.model import demo_region_settings
from mgimm_core.model.testing_mgimm import random_chip, tiny_model, tiny_processor

CHIPS = [random_chip(32, 32), random_chip(24, 40, 1), random_chip(32, 32, 2)]
BOXES = [np.array([[0, 0, 10, 10], [5, 5, 30, 20]]), np.array([[2, 2, 9, 9]]), np.zeros((0, 4))]
PROMPTS = ["describe the big red region near the road", "describe", "the"]
TEXT_MODELS = {"llama": {}, "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=256)}


@pytest.mark.parametrize("text", TEXT_MODELS)
def test_batched_greedy_equals_one_at_a_time(text):
    model = tiny_model(seed=3, **demo_region_settings(), global_tokens=4, text_config=TEXT_MODELS[text])
    processor = tiny_processor(model.config)
    batch = processor(CHIPS, boxes=BOXES, prompts=PROMPTS)
    lengths = batch["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) == 3  # really different prompt lengths, so left padding is exercised
    batched = model.generate(**batch, max_new_tokens=6, eos_token_id=None)
    assert batched.shape == (3, 6)
    for i in range(3):
        single = model.generate(**processor(CHIPS[i], boxes=BOXES[i], prompts=PROMPTS[i]),
                                max_new_tokens=6, eos_token_id=None)
        assert batched[i].tolist() == single[0].tolist()
    # the first step's logits agree too, not only the argmax
    full = model(**batch).logits[:, -1]
    for i in range(3):
        alone = model(**processor(CHIPS[i], boxes=BOXES[i], prompts=PROMPTS[i])).logits[0, -1]
        torch.testing.assert_close(full[i], alone, atol=1e-5, rtol=1e-5)


def test_greedy_is_deterministic_and_sampling_follows_the_seed():
    model = tiny_model()
    processor = tiny_processor(model.config)
    batch = processor(CHIPS[:2], boxes=BOXES[:2], prompts=PROMPTS[:2])
    first = model.generate(**batch, max_new_tokens=5, eos_token_id=None)
    assert torch.equal(first, model.generate(**batch, max_new_tokens=5, eos_token_id=None))
    torch.manual_seed(1)
    a = model.generate(**batch, max_new_tokens=8, do_sample=True, temperature=5.0, eos_token_id=None)
    torch.manual_seed(1)
    b = model.generate(**batch, max_new_tokens=8, do_sample=True, temperature=5.0, eos_token_id=None)
    assert torch.equal(a, b) and not torch.equal(a, first.new_zeros(a.shape))


def test_stop_strings_end_generation_early():
    model = tiny_model()
    processor = tiny_processor(model.config)
    batch = processor(CHIPS[0], boxes=BOXES[0])
    free = model.generate(**batch, max_new_tokens=10, eos_token_id=None)
    first_word = processor.tokenizer.decode(free[0, 1:2])
    stopped = model.generate(**batch, max_new_tokens=10, eos_token_id=None, stop_strings=[first_word],
                             tokenizer=processor.tokenizer)
    assert stopped.shape[1] <= 2
    assert processor.batch_decode(stopped, stop_strings=[first_word])[0] == processor.tokenizer.decode(free[0, :1])


def test_region_mode_without_regions_fails_clearly():
    model = tiny_model()
    processor = tiny_processor(model.config)
    batch = processor(CHIPS[2], boxes=BOXES[2], mode="global")
    with pytest.raises(ValueError, match="image tokens per sample"):
        model.generate(**batch, mode="region", max_new_tokens=2)

