"""One GRPO step through the pieces together, on CPU: the paged sampler generates G completions per prompt on the
policy's own weights, the C++ rewards score them, group-relative advantages, the fused LM-head GRPO loss with the
sampler's log-probs as old_logps, an optimizer step, and the sampler sees the new weights in place."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import r1fast
from r1fast import rewards
from r1fast.sampler import Sampler, SamplingParams

# Words the tiny model emits; the four R1 tags are single tokens, so tag_count has something to count.
TAGS = ["<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>"]
WORDS = TAGS + [f"w{i} " for i in range(12)]
G, NEW_TOKENS = 8, 8


def tiny_policy() -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, eos_token_id=None, bos_token_id=None, pad_token_id=None)  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def hidden_and_ids(model, group) -> tuple[torch.Tensor, torch.Tensor]:
    """The final hidden states that predict a group's completion tokens ([G, T, H], grad enabled) and the tokens
    ([G, T])."""
    ids = torch.tensor([group.prompt_token_ids + c.token_ids for c in group.completions])
    start = len(group.prompt_token_ids)
    hidden = model.model(ids).last_hidden_state[:, start - 1 : -1]
    return hidden, ids[:, start:]


def test_one_grpo_step_through_sampler_rewards_advantages_and_fused_loss(seed):
    model = tiny_policy()
    sampler = Sampler(model, block_size=4)
    prompts = [[4 + (3 * i + j) % 12 for j in range(2 + i)] for i in range(4)]  # ragged prompt lengths
    groups = sampler.generate(prompts, SamplingParams(n=G, temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True,
                                                      seed=seed))  # fmt: skip
    texts = ["".join(WORDS[t] for t in c.token_ids) for g in groups for c in g.completions]
    _, total = rewards.score(["tag_count"], None, texts)
    reward = torch.tensor(total)
    assert reward.min() >= 0 and reward.max() <= 1 and reward.std() > 0
    advantages = r1fast.group_advantages(reward[:, None], num_generations=G)

    # The loss over every group (prompts differ in length: one call per group, summed), old = the sampler's logps.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    surrogate_before = 0.0
    for p, group in enumerate(groups):
        hidden, ids = hidden_and_ids(model, group)
        old = torch.tensor([c.logprobs for c in group.completions])
        adv = advantages[p * G : (p + 1) * G]
        loss, metrics = r1fast.fused_linear_grpo_loss(hidden, model.lm_head.weight, ids, torch.ones_like(ids), adv,
                                                      old, loss_type="grpo")  # fmt: skip
        # On-policy: the trainer's log-probs are the sampler's, so no ratio is clipped and the loss is -mean(A).
        assert metrics["clip_ratio/region_mean"] == 0.0
        torch.testing.assert_close(loss, -adv.mean(), rtol=1e-4, atol=1e-5)
        (loss / len(groups)).backward()
        with torch.no_grad():
            logps = r1fast.fused_linear_logprobs(hidden.detach(), model.lm_head.weight.detach(), ids)
        torch.testing.assert_close(logps, old, rtol=1e-5, atol=1e-5)
        surrogate_before += (adv[:, None] * logps).sum().item()
    optimizer.step()

    # A small step along the policy gradient raises sum(A * logp) of the sampled completions (first order), and
    # the next generate() runs on the updated weights, in place: its log-probs are the new model's.
    surrogate_after = 0.0
    with torch.no_grad():
        for p, group in enumerate(groups):
            hidden, ids = hidden_and_ids(model, group)
            logps = r1fast.fused_linear_logprobs(hidden, model.lm_head.weight, ids)
            surrogate_after += (advantages[p * G : (p + 1) * G, None] * logps).sum().item()
    assert surrogate_after > surrogate_before
    regenerated = sampler.generate(prompts, SamplingParams(n=2, temperature=1.0, max_tokens=4, ignore_eos=True,
                                                           seed=seed))  # fmt: skip
    with torch.no_grad():
        for group in regenerated:
            hidden, ids = hidden_and_ids(model, group)
            want = r1fast.fused_linear_logprobs(hidden, model.lm_head.weight, ids)
            torch.testing.assert_close(torch.tensor([c.logprobs for c in group.completions]), want, rtol=1e-5,
                                       atol=1e-5)  # fmt: skip
