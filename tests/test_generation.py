"""The shared generation loop: the repetition penalty spares the prompt, end of turn and the newline."""

import pytest

import reward

torch = pytest.importorskip("torch")


def test_penalty_hits_generated_tokens_but_not_the_prompt_or_end_of_turn():
    eos = 2
    penalty = reward.penalise_generated_repeats(2.0, prompt_length=3, exempt_ids={eos, None})
    # prompt: 5, eos, 6; generated so far: 7, eos, 8
    input_ids = torch.tensor([[5, eos, 6, 7, eos, 8]])
    scores = torch.tensor([[1.0, 1.0, 4.0, 1.0, 1.0, 3.0, 3.0, 4.0, -2.0, 1.0]])
    out = penalty(input_ids, scores.clone())
    assert out[0, 7] == 2.0 and out[0, 8] == -4.0  # generated: positive halved, negative doubled
    assert out[0, 5] == 3.0 and out[0, 6] == 3.0  # prompt-only tokens untouched
    assert out[0, eos] == 4.0  # end of turn untouched, although it is in prompt and output
    assert torch.equal(penalty(input_ids[:, :3], scores.clone()), scores)  # nothing generated yet


def test_batched_generation_with_penalty_matches_one_at_a_time(tiny_model):
    model, tokenizer = reward.load_causal_lm(tiny_model, log=lambda _: None)
    queries = ["docker compose networking", "rust borrow checker", "embeddings"]
    batched, _ = reward.generate_expansions(model, tokenizer, queries, batch_size=3, max_new_tokens=10,
                                            log=lambda _: None, repetition_penalty=1.3)
    alone = [reward.generate_expansions(model, tokenizer, [q], batch_size=1, max_new_tokens=10,
                                        log=lambda _: None, repetition_penalty=1.3)[0][0] for q in queries]
    assert batched == alone
    plain, _ = reward.generate_expansions(model, tokenizer, queries, batch_size=3, max_new_tokens=10,
                                          log=lambda _: None)
    assert len(plain) == 3


def test_newline_end_of_turn_and_padding_are_spared(tiny_model):
    _, tokenizer = reward.load_causal_lm(tiny_model, log=lambda _: None)
    (newline,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    exempt = reward.penalty_exempt_ids(tokenizer)
    assert exempt == sorted({newline, tokenizer.eos_token_id, tokenizer.pad_token_id})
    # every line of the format ends in a newline: a second one must not cost anything
    penalty = reward.penalise_generated_repeats(2.0, prompt_length=1, exempt_ids=exempt)
    scores = torch.ones(1, len(tokenizer))
    out = penalty(torch.tensor([[0, newline, 7]]), scores.clone())
    assert out[0, newline] == 1.0 and out[0, 7] == 0.5
