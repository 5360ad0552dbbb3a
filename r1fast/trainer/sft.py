"""SFTTrainer: supervised fine-tuning (the R1 recipe's cold start) through the fused LM-head log-probs.

The loss is TRL's SFTTrainer loss: the cross-entropy of the label tokens, -log p(label), summed over the step's
label tokens and divided by their count (TRL's num_items_in_batch), on the completion tokens only
(completion_only_loss, TRL's semantics for prompt-completion rows). -log p comes from r1fast.fused_linear_logprobs
with its gradient: the [tokens x vocab] logits are never held whole. A step's rows are packed into micro-batches of
at most micro_batch_tokens tokens, padding-free (one row of concatenated sequences whose position ids restart at 0,
so that attention stays within each sequence, as TRL's padding_free).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch

from r1fast.logit_transform import LogitTransform, UnknownLogitTransformError
from r1fast.loss import fused_linear_logprobs
from r1fast.trainer import distributed, validation
from r1fast.trainer.config import PROMPT_TEMPLATES, RunConfig, apply_template
from r1fast.trainer.logging import MetricsLogger, gpu_stats
from r1fast.trainer.loop import TrainingLoop, enable_activation_checkpointing, make_optimizer
from r1fast.trainer.validation import DatasetRowError, InputError


@dataclass
class SFTConfig(RunConfig):
    """An SFT run. Names and defaults follow TRL's SFTConfig where TRL has the knob (learning_rate 2e-5, max_length
    1024, completion_only_loss, padding_free, gradient_checkpointing; the optimizer and run keys as GRPOConfig's).

    A step: rows_per_step rows (a fresh shuffle of the dataset every epoch, from seed), each tokenized as TRL does
    (the prompt in prompt_template, "r1" or a string with "{prompt}"; the completion appended, with the EOS token
    when a string completion lacks it; chats through the tokenizer's chat template), cut to max_length tokens
    (keeping the start), packed into micro-batches of at most micro_batch_tokens tokens (a longer sequence goes
    alone), padding-free (padding_free=False: right-padded rows instead, for comparison), then one optimizer step.
    completion_only_loss: the loss on the completion tokens only (False: on every token after the first; None,
    TRL's default: the completion's tokens of prompt/completion rows, every token of a "messages" chat).
    Evaluation: eval_steps (None: after the last step only, when an eval_dataset is given) logs eval/loss.
    Not TRL's: a step is rows_per_step rows packed by tokens (TRL: per_device_train_batch_size rows times
    gradient_accumulation_steps); the loss is the same.
    """

    # what a step sees
    rows_per_step: int = 8
    micro_batch_tokens: int = 4096
    max_length: int | None = 1024
    prompt_template: str = "{prompt}"
    completion_only_loss: bool | None = None
    padding_free: bool = False
    # optimizer
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "linear"
    warmup_steps: int = 0
    gradient_checkpointing: bool = True
    # kernels
    loss_backend: str = "auto"
    fp32_lm_head: bool = False
    # run
    max_steps: int = -1
    num_train_epochs: float = 3.0
    seed: int = 42
    output_dir: str | None = None
    logging_steps: int = 10
    save_steps: int = 500
    save_every_minutes: float = 30.0
    save_total_limit: int | None = None
    # evaluation and reporting
    eval_steps: int | None = None
    report_to: str | list[str] = "none"
    disable_tqdm: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the user's own notes, saved with checkpoints

    def __post_init__(self) -> None:
        self.check_run_length()
        for name in ("rows_per_step", "micro_batch_tokens", "logging_steps"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("save_steps", "warmup_steps", "seed"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("max_length", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 2):
                raise ValueError(f"{name} must be an int >= 2 or None, got {value!r}")
        if self.prompt_template not in PROMPT_TEMPLATES and "{prompt}" not in self.prompt_template:
            raise ValueError(f"prompt_template must be one of {sorted(PROMPT_TEMPLATES)} or contain '{{prompt}}'")
        self.check_run_fields()


@dataclass
class Example:
    """One tokenized row: ids (prompt + completion, at most max_length) and label_mask (1 where the token is
    trained: predicted from the tokens before it), both of the same length."""

    ids: list[int]
    label_mask: list[int]


def _prompt_and_completion(row: Any) -> tuple[Any, Any]:
    """(prompt, completion) of a row: "prompt" + "completion" (strings, or chat messages), or "messages" (a chat
    whose last message, the assistant's, is the completion). ValueError / TypeError for anything else."""
    if not isinstance(row, dict):
        raise ValueError(f"each row must be an object, got {row!r:.60}")
    if "messages" in row and "prompt" not in row:
        messages = row["messages"]
        if not (isinstance(messages, list) and len(messages) >= 2 and all(isinstance(m, dict) for m in messages)):
            raise ValueError("'messages' must be a chat of at least two messages (the last one is trained)")
        if messages[-1].get("role") != "assistant":
            raise ValueError(f"the last message must be the assistant's (the completion), got role "
                             f"{messages[-1].get('role')!r}")  # fmt: skip
        return messages[:-1], messages[-1:]
    if "prompt" not in row or "completion" not in row:
        raise ValueError(f"each row needs 'prompt' and 'completion' (or 'messages'), got columns {sorted(row)}")
    prompt, completion = row["prompt"], row["completion"]
    validation.check_row_shape(row)
    if isinstance(prompt, str) != isinstance(completion, str):
        raise TypeError("prompt and completion must both be strings or both chat messages")
    if isinstance(completion, str) and not completion:
        raise ValueError("the completion is empty")
    if not isinstance(completion, str) and not (isinstance(completion, list) and completion
                                                and all(isinstance(m, dict) for m in completion)):  # fmt: skip
        raise TypeError(f"a chat completion must be a list of messages, got {completion!r:.40}")
    return prompt, completion


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_example(tokenizer: Any, row: Any, config: SFTConfig) -> Example:
    """A row tokenized as TRL's SFTTrainer tokenizes it: the prompt (in config.prompt_template) alone and prompt +
    completion (+ EOS for a string completion that does not end with it), the completion starting where the two
    diverge; cut to max_length (keeping the start). ValueError / TypeError naming what is wrong with the row."""
    prompt, completion = _prompt_and_completion(row)
    prompt = apply_template(config.prompt_template, prompt)
    prompt_ids = validation.tokenize_prompt(tokenizer, prompt)
    if isinstance(completion, str):
        ids = list(tokenizer.encode(prompt + completion))
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
    else:
        ids = validation.tokenize_prompt(tokenizer, prompt, completion)
    only = config.completion_only_loss
    if only is None:  # TRL: the completion of prompt/completion rows, the whole of a conversation
        only = not ("messages" in row and "prompt" not in row)
    start = _common_prefix(prompt_ids, ids) if only else 1
    mask = [0] * start + [1] * (len(ids) - start)
    if config.max_length is not None:
        ids, mask = ids[: config.max_length], mask[: config.max_length]
    mask[0] = 0  # the first token has nothing to be predicted from
    if not any(mask):
        raise ValueError(f"no completion token is left to train on ({len(prompt_ids)} prompt tokens, "
                         f"max_length={config.max_length})")  # fmt: skip
    return Example(ids, mask)


class SFTTrainer(TrainingLoop):
    """Supervised fine-tuning of a Hugging Face causal LM in place, with the loop of GRPOTrainer (checkpoints,
    resume, clean stops, metrics, progress bar, TensorBoard / W&B, summary, export).

    model: a causal LM with get_decoder() and an LM head (llama, mistral, qwen2, qwen3, ...); tokenizer: encode /
    eos_token_id (apply_chat_template for chats); train_dataset: rows {"prompt", "completion"} (strings or chat
    messages) or {"messages"}; config: SFTConfig; eval_dataset: rows of the same kind, scored as eval/loss every
    eval_steps steps and after the last. log_stream: console lines or the progress bar (None: silent).
    Data parallel under torch.distributed as GRPOTrainer (rows_per_step rows per rank; the loss is normalised by
    the label tokens of every rank, as TRL with average_tokens_across_devices).

    Every row is tokenized and checked here, before step 1. Raises InputError (a DatasetRowError names the row) or
    TypeError.
    """

    CHECKPOINT_FORMAT = "r1fast-sft-1"

    @property
    def rows_per_step(self) -> int:
        return self.config.rows_per_step

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        train_dataset: Sequence[dict[str, Any]],
        config: SFTConfig | None = None,
        *,
        eval_dataset: Sequence[dict[str, Any]] | None = None,
        log_stream: TextIO | None = sys.stdout,
    ) -> None:
        self.config = config = config or SFTConfig()
        if not isinstance(config, SFTConfig):
            raise TypeError(f"config must be an SFTConfig, got {type(config).__name__}")
        validation.check_output_dir(config.output_dir)
        validation.check_model(model, config.loss_backend)
        self.model, self.tokenizer = model, tokenizer
        self.rank, self.world_size = distributed.rank_and_world()
        self.log_stream = log_stream if self.rank == 0 else None
        self.lm_head = model.get_output_embeddings()
        self.device = self.lm_head.weight.device
        try:
            self.logit_transform = LogitTransform.from_config(model.config).kwargs()
        except UnknownLogitTransformError as e:
            raise InputError(str(e)) from None
        max_len = getattr(model.config, "max_position_embeddings", None)
        vocab = model.get_input_embeddings().weight.shape[0]
        self.train_dataset = self._encode_all(train_dataset, "train_dataset", max_len, vocab)
        self.eval_dataset = None if eval_dataset is None else self._encode_all(eval_dataset, "eval_dataset", max_len,
                                                                               vocab)  # fmt: skip
        distributed.broadcast_model(model)
        if config.gradient_checkpointing:
            enable_activation_checkpointing(model)
        self.optimizer = make_optimizer(model, config)
        self.logger = MetricsLogger(config.output_dir if self.rank == 0 else None, self.log_stream,
                                    report_to=config.report_to if self.rank == 0 else "none",
                                    progress_bar=config.progress_bar(self.log_stream),
                                    run_config=config.to_dict())  # fmt: skip
        self.step = 0
        self.num_tokens = 0  # tokens trained on so far, every rank's (TRL's num_tokens)

    def _encode_all(self, rows: Sequence[Any], name: str, max_len: int | None, vocab: int) -> list[Example]:
        """Every row tokenized (encode_example) and checked against the model's context and vocabulary; a
        DatasetRowError names the first bad row of the dataset called `name`."""
        if len(rows) == 0:
            raise InputError(f"{name} is empty")
        out, bad = [], []
        for index in range(len(rows)):
            try:
                example = encode_example(self.tokenizer, rows[index], self.config)
                if max_len is not None and len(example.ids) > max_len:
                    raise ValueError(f"{len(example.ids)} tokens do not fit the model's context of {max_len} "
                                     f"(set max_length <= {max_len})")  # fmt: skip
                if max(example.ids) >= vocab or min(example.ids) < 0:
                    raise ValueError(f"token id {max(example.ids)} is outside the model's vocabulary of {vocab} "
                                     "(tokenizer and model do not match)")  # fmt: skip
                out.append(example)
            except Exception as e:  # the user's data through the user's tokenizer: any failure names the row
                bad.append((index, validation._one_line(e)))
        if bad:
            raise DatasetRowError(bad[0][0], bad[0][1], [i for i, _ in bad[1:]], name)
        return out

    # -- batches and the loss ---------------------------------------------------------------------------------

    def micro_batches(self, examples: list[Example]) -> list[dict[str, torch.Tensor]]:
        """The examples, in order, in micro-batches of at most micro_batch_tokens tokens (one longer example goes
        alone). Each: input_ids and position_ids [b, L] (padding-free: b = 1, the sequences concatenated, positions
        restarting at 0; else right-padded rows), predictors [n] (flat indices into [b * L] of the hidden states
        that predict a label) and labels [n] int64."""
        groups: list[list[Example]] = [[]]
        for example in examples:
            used = sum(len(e.ids) for e in groups[-1])
            if groups[-1] and used + len(example.ids) > self.config.micro_batch_tokens:
                groups.append([])
            groups[-1].append(example)
        return [self._micro_batch(group) for group in groups if group]

    def _micro_batch(self, group: list[Example]) -> dict[str, torch.Tensor]:
        rows = [[e] for e in group] if not self.config.padding_free else [group]
        width = max(sum(len(e.ids) for e in row) for row in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.int64)
        position_ids = torch.zeros(len(rows), width, dtype=torch.int64)
        predictors, labels = [], []
        for r, row in enumerate(rows):
            offset = 0
            for e in row:
                n = len(e.ids)
                input_ids[r, offset : offset + n] = torch.tensor(e.ids)
                position_ids[r, offset : offset + n] = torch.arange(n)
                predictors += [r * width + offset + j - 1 for j in range(1, n) if e.label_mask[j]]
                labels += [e.ids[j] for j in range(1, n) if e.label_mask[j]]
                offset += n
            position_ids[r, offset:] = torch.arange(width - offset)  # right padding: after every real token
        to = lambda x: x.to(self.device, non_blocking=True)  # noqa: E731
        return {"input_ids": to(input_ids), "position_ids": to(position_ids),
                "predictors": to(torch.tensor(predictors, dtype=torch.int64)),
                "labels": to(torch.tensor(labels, dtype=torch.int64))}  # fmt: skip

    def label_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(label) [n] float32 of a micro-batch's labels, through the fused LM head (differentiable when grad
        mode is on)."""
        decoder = self.model.get_decoder()
        hidden = decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                         use_cache=False).last_hidden_state  # fmt: skip
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["predictors"])
        return fused_linear_logprobs(hidden, self.lm_head.weight, batch["labels"], bias=self.lm_head.bias,
                                     backend=self.config.loss_backend, fp32_head=self.config.fp32_lm_head,
                                     **self.logit_transform)  # fmt: skip

    def loss_and_backward(self, batches: list[dict[str, torch.Tensor]]) -> float:
        """Accumulates the gradient of TRL's SFT loss over a step's micro-batches: sum of -log p(label) / the
        step's label tokens over every rank, times the world size (the gradients are then averaged). Returns this
        rank's loss, the mean cross-entropy per label token when there is one rank."""
        items = distributed.sum_over_ranks(float(sum(len(b["labels"]) for b in batches)), self.device)
        total = 0.0
        for batch in batches:
            loss = -self.label_logps(batch).sum() / max(items, 1.0) * self.world_size
            loss.backward()
            total += loss.item()
        return total

    # -- the step and evaluation ------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimizer step on rows_per_step rows. Returns the step's metrics (TRL's names: loss, grad_norm,
        learning_rate, num_tokens; step_time)."""
        start = time.perf_counter()
        examples = self.rows_of_batch(self.step, self.config.rows_per_step)
        batches = self.micro_batches(examples)
        self.model.train()
        lr = self.set_learning_rate(self.total_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_and_backward(batches)
        grad_norm = self.optimizer_step()
        self.model.eval()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_tokens += int(distributed.sum_over_ranks(float(sum(len(e.ids) for e in examples)), self.device))
        metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr,
                   "micro_batches": float(len(batches)), "step_time": time.perf_counter() - start}  # fmt: skip
        metrics.update(gpu_stats(self.device))
        metrics = distributed.reduce_metrics(metrics, self.device)
        metrics["num_tokens"] = float(self.num_tokens)
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """{"loss": the mean cross-entropy per label token over eval_dataset} (this rank's rows: all of them)."""
        if self.eval_dataset is None:
            raise InputError("no eval_dataset was given")
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.micro_batches(self.eval_dataset):
            total -= self.label_logps(batch).sum().item()
            count += len(batch["labels"])
        return {"loss": total / max(count, 1)}

    def extra_state(self) -> dict[str, Any]:
        return {"num_tokens": self.num_tokens}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        self.num_tokens = int(state.get("num_tokens", 0))
