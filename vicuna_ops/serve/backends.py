"""What turns a prompt into streamed text inside a worker.

* ``TransformersBackend``: any HF causal LM folder, a manual decode loop with a KV cache in
  a thread of its own (so it can stop at EOS, at a stop string, at the token budget, or the
  moment the client goes away), streaming text as it is decoded;
* ``StubBackend``: fixed tokens ``" t0 t1 t2 ..."`` at a fixed rate, no model at all, for
  tests and the proxy benchmark (its output is known, so a resumed stream can be checked
  word for word);
* ``VLLMBackend``: vLLM's async engine, only when vLLM is installed and asked for.

Every backend streams through ``generate(prompt, params, stats)``, an async iterator of text
pieces that fills ``stats`` (tokens, finish reason) as it goes.
"""

from __future__ import annotations

import os

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from vicuna_ops import adaptors
from vicuna_ops.errors import UserError
from vicuna_ops.models.context import context_length

BACKENDS = ("transformers", "stub", "vllm")


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int  # new tokens to generate at most (already net of any resumed text)
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    resumed_tokens: int = 0  # tokens of the prompt that are an earlier worker's output


@dataclass
class GenerationStats:
    completion_tokens: int = 0
    finish_reason: str | None = None  # "stop" | "length"


@dataclass
class StopScanner:
    """Finds stop strings in streamed text, holding back what might be the start of one."""

    stops: tuple[str, ...]
    text: str = ""
    sent: int = 0
    stopped: bool = field(default=False)

    def feed(self, text: str, final: bool = False) -> str:
        """The full text so far in; the part that is safe to send now out."""
        self.text = text
        end = len(text)
        for stop in self.stops:
            at = text.find(stop)
            if at >= 0 and at < end:
                end, self.stopped = at, True
        if not self.stopped and not final:
            end = max(self.sent, end - _partial_stop(text, self.stops))
            while end > self.sent and text[end - 1] == "\ufffd":  # half a UTF-8 character
                end -= 1
        piece, self.sent = text[self.sent:end], max(self.sent, end)
        return piece


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that could grow into a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StubBackend:
    """Streams ``tokens`` fixed words at ``rate`` per second; one token per word."""

    def __init__(self, model_name: str = "stub", tokens: int = 32, rate: float = 100.0,
                 context_length: int = 4096) -> None:
        self.model_name = model_name
        self.tokens = tokens
        self.delay = 1.0 / rate if rate > 0 else 0.0
        self.context_length = context_length

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @staticmethod
    def token(index: int) -> str:
        return f" t{index}"

    async def generate(self, prompt: str, params: GenerationParams,
                       stats: GenerationStats) -> AsyncIterator[str]:
        start = params.resumed_tokens
        end = min(self.tokens, start + params.max_tokens)
        for index in range(start, end):
            if self.delay:
                await asyncio.sleep(self.delay)
            stats.completion_tokens += 1
            yield self.token(index)
        stats.finish_reason = "stop" if end >= self.tokens else "length"


class TransformersBackend:
    """An HF causal LM, decoded token by token on GPU if there is one, else CPU."""

    def __init__(self, folder: Path, model_name: str) -> None:
        torch = adaptors.torch()
        transformers = adaptors.transformers()
        self.model_name = model_name
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                str(folder), dtype=dtype).to(self.device).eval()
        except ImportError as exc:  # e.g. a 4-bit checkpoint without compressed-tensors
            raise UserError(f"cannot load the model in {folder}: "
                            f"{(str(exc).splitlines() or [type(exc).__name__])[0]}",
                            hint="install vicuna-ops[serve] (compressed-tensors loads "
                                 "`vops quantize` output)") from exc
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the model in {folder}: {str(exc).splitlines()[0]}",
                            hint="the folder needs config.json, weights and tokenizer files"
                            ) from exc
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        if not eos_ids:
            raise UserError(f"the model in {folder} has no end-of-sequence token",
                            hint="the Vicuna template ends each reply with </s>")
        self.eos_ids = frozenset(eos_ids)
        self.context_length = context_length(self.model.config)  # RoPE scaling included

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return [bos, *ids] if bos is not None else list(ids)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    async def generate(self, prompt: str, params: GenerationParams,
                       stats: GenerationStats) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                self._decode(self.encode(prompt), params, stats, emit, cancel)
                emit(None)
            except BaseException as exc:  # surfaced in the request that caused it
                emit(exc)

        thread = threading.Thread(target=run, name="vops-generate", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # the client left, or we are done: the thread stops at its next token

    def _decode(self, prompt_ids: list[int], params: GenerationParams,
                stats: GenerationStats, emit: Any, cancel: threading.Event) -> None:
        torch = self.torch
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        scanner = StopScanner(params.stop)
        generated: list[int] = []
        with torch.inference_mode():
            inputs = torch.tensor([prompt_ids], device=self.device)
            cache = None
            for _ in range(params.max_tokens):
                if cancel.is_set():
                    return
                out = self.model(input_ids=inputs, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                token = _sample(torch, out.logits[0, -1].float(), params, generator)
                if token in self.eos_ids:
                    stats.finish_reason = "stop"
                    break
                generated.append(token)
                stats.completion_tokens += 1
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                piece = scanner.feed(text)
                if piece:
                    emit(piece)
                if scanner.stopped:
                    stats.finish_reason = "stop"
                    return
                inputs = torch.tensor([[token]], device=self.device)
            else:
                stats.finish_reason = "length"
        piece = scanner.feed(self.tokenizer.decode(generated, skip_special_tokens=True),
                             final=True)
        if piece:
            emit(piece)


def _sample(torch: Any, logits: Any, params: GenerationParams, generator: Any) -> int:
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


class VLLMBackend:
    """vLLM's AsyncLLMEngine; continuous batching does the concurrency."""

    def __init__(self, folder: Path, model_name: str) -> None:
        vllm = adaptors.require("vllm")
        self.model_name = model_name
        self._vllm = vllm
        # The KV cache vops planned the GPU for (launch/gpu_fit.py): --max-model-len and
        # --max-concurrency, when the deployment set them.
        planned = {key: int(os.environ[env]) for key, env in (
            ("max_model_len", "VOPS_MAX_MODEL_LEN"), ("max_num_seqs", "VOPS_MAX_CONCURRENCY"))
            if os.environ.get(env, "").isdigit()}
        self.engine = vllm.AsyncLLMEngine.from_engine_args(
            vllm.AsyncEngineArgs(model=str(folder), served_model_name=model_name, **planned))
        transformers = adaptors.transformers()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        config = transformers.AutoConfig.from_pretrained(str(folder))
        self.context_length = context_length(config)
        self._next_id = 0

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    async def generate(self, prompt: str, params: GenerationParams,
                       stats: GenerationStats) -> AsyncIterator[str]:
        self._next_id += 1
        sampling = self._vllm.SamplingParams(
            max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
            stop=list(params.stop) or None, seed=params.seed)
        sent = 0
        async for output in self.engine.generate(prompt, sampling, f"vops-{self._next_id}"):
            completion = output.outputs[0]
            stats.completion_tokens = len(completion.token_ids)
            if len(completion.text) > sent:
                yield completion.text[sent:]
                sent = len(completion.text)
            if completion.finish_reason:
                stats.finish_reason = "length" if completion.finish_reason == "length" else "stop"


def load_backend(kind: str, *, model: str | None, model_name: str | None, cache_dir: Path,
                 stub_tokens: int = 32, stub_rate: float = 100.0) -> Any:
    """The backend ``kind`` for ``model`` (a folder or bucket URI; unused by the stub)."""
    from vicuna_ops.serve import modelfiles

    if kind not in BACKENDS:
        raise UserError(f"unknown backend {kind!r}", hint=f"use one of: {', '.join(BACKENDS)}")
    if kind == "stub":
        return StubBackend(model_name or "stub", tokens=stub_tokens, rate=stub_rate)
    if not model:
        raise UserError(f"the {kind} backend needs --model",
                        hint="a local HF model folder or a bucket URI of one")
    folder = modelfiles.resolve_model(model, cache_dir)
    name = model_name or modelfiles.default_model_name(model)
    if kind == "vllm":
        return VLLMBackend(folder, name)
    return TransformersBackend(folder, name)
