"""r1fast.reference.group_advantages against the advantages TRL 1.16's GRPOTrainer computes itself.

TRL's advantage code lives inside `_generate_and_score_completions`; the test drives that method with generation
replaced by fixed completions and reward functions that return chosen values (None included), and compares the
advantages it returns with the reference's.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from r1fast import reference

G = 4
NAN = float("nan")

# rewards_per_func [N, F]: 4 groups of G = 4; None (NaN) rewards, a zero-std group, an all-None completion,
# and a group with a single scored completion.
REWARDS = [
    [1.0, 0.5],
    [0.0, 0.5],
    [1.0, NAN],
    [0.5, 1.0],  # mixed, one None
    [1.0, 1.0],
    [1.0, 1.0],
    [1.0, 1.0],
    [1.0, 1.0],  # zero std in both functions
    [NAN, NAN],
    [0.2, 0.0],
    [0.9, 1.0],
    [0.4, NAN],  # an unscorable completion
    [NAN, NAN],
    [NAN, NAN],
    [NAN, NAN],
    [0.7, 0.3],  # one scored completion
]


def reward_func(column: int):
    """A reward function returning REWARDS[i][column] for completion 'w{i}' (None for NaN)."""

    def score(completions, **_):
        out = []
        for text in completions:
            value = REWARDS[int(text.strip().split()[0][1:])][column]
            out.append(None if math.isnan(value) else value)
        return out

    score.__name__ = f"reward_{column}"
    return score


REWARD_FUNCS = [reward_func(0), reward_func(1)]


def fixed_generate(trainer):
    """Replaces trainer._generate: completion i is the single token 'w{i}' followed by EOS."""

    def generate(prompts):
        tokenizer = trainer.processing_class
        prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        completion_ids = [[i, tokenizer.eos_token_id] for i in range(len(prompts))]
        completions = [f"w{i}" for i in range(len(prompts))]
        return prompt_ids, completion_ids, None, completions, None, {}, None, None

    return generate


@pytest.mark.parametrize("aggregation", reference.MULTI_OBJECTIVE_AGGREGATIONS)
@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
@pytest.mark.parametrize("weights", [None, [1.0, 0.5]])
def test_group_advantages_equal_trl(make_trainer, monkeypatch, aggregation, scale_rewards, weights):
    config = {
        "scale_rewards": scale_rewards,
        "multi_objective_aggregation": aggregation,
        "per_device_train_batch_size": len(REWARDS),
        "num_generations": G,
    }
    if weights is not None:
        config["reward_weights"] = weights
    trainer = make_trainer(reward_funcs=REWARD_FUNCS, **config)
    monkeypatch.setattr(trainer, "_generate", fixed_generate(trainer))
    inputs = [{"prompt": "w1 w2 w3"} for _ in REWARDS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL warns about the all-None completion, on purpose here
        out = trainer._generate_and_score_completions(inputs)
    expected = out["advantages"].double()

    rewards = torch.tensor(REWARDS, dtype=torch.float64)
    ours = reference.group_advantages(
        rewards, G, reward_weights=weights, scale_rewards=scale_rewards, multi_objective_aggregation=aggregation
    )
    assert not torch.isnan(ours).any()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert ours[8] == 0  # the unscorable completion
    if aggregation == "sum_then_normalize" and scale_rewards != "none":
        assert ours[4:8].eq(0).all()  # the zero-std group: 0, not NaN


def test_boolean_scale_rewards_mean_group_and_none():
    rewards = torch.tensor(REWARDS, dtype=torch.float64)
    for flag, name in ((True, "group"), (False, "none")):
        torch.testing.assert_close(
            reference.group_advantages(rewards, G, scale_rewards=flag),
            reference.group_advantages(rewards, G, scale_rewards=name),
        )


def test_group_advantages_rejects_bad_arguments():
    rewards = torch.tensor(REWARDS)
    with pytest.raises(ValueError, match="num_generations"):
        reference.group_advantages(rewards, 3)
    with pytest.raises(ValueError, match="scale_rewards"):
        reference.group_advantages(rewards, G, scale_rewards="global")
    with pytest.raises(ValueError, match="reward_weights"):
        reference.group_advantages(rewards, G, reward_weights=[1.0])
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        reference.group_advantages(rewards, G, multi_objective_aggregation="max")
