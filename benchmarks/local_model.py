"""Embedded model throughput: sdstudio's local provider vs. raw llama_cpp on the same prompt.

Prints tokens/s for both and their ratio (goal >= 0.9: the provider adds no meaningful overhead).
Run: .venv/bin/python benchmarks/local_model.py
"""
from __future__ import annotations

import asyncio
import statistics
import time

from llama_cpp import Llama

from sdstudio.config import ModelParameters, ModelSpec
from sdstudio.providers import ChatRequest, get_provider
from sdstudio.providers.local import DEFAULT_CONTEXT, cpu_threads, model_thread

PROMPT = "Write a short Python function that reverses a string, and explain it."
MAX_TOKENS, RUNS = 128, 5


def raw_tokens_per_second(llm: Llama) -> float:
    """Raw llama_cpp, called on the same thread the provider uses: llama.cpp's OpenMP thread team belongs
    to the calling thread, and two teams on two cores would slow whichever runs second."""
    def call() -> float:
        started = time.perf_counter()
        out = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS,
                                         temperature=0.0, seed=1)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)

    return model_thread().submit(call).result()


def provider_tokens_per_second(provider) -> float:
    request = ChatRequest.of(PROMPT, ModelParameters(max_tokens=MAX_TOKENS, temperature=0.0, seed=1))
    started = time.perf_counter()
    completion = asyncio.run(provider.complete(request))
    return completion.usage.output_tokens / (time.perf_counter() - started)


def main() -> None:
    provider = get_provider(ModelSpec())
    raw = Llama(model_path=str(provider.model_path), n_ctx=DEFAULT_CONTEXT, n_threads=cpu_threads(),
                n_threads_batch=cpu_threads(), verbose=False)
    provider_tokens_per_second(provider)  # warm-up: load and first-call costs are not throughput
    raw_tokens_per_second(raw)
    raw_runs, provider_runs = [], []
    for _ in range(RUNS):  # interleave so machine noise hits both alike
        raw_runs.append(raw_tokens_per_second(raw))
        provider_runs.append(provider_tokens_per_second(provider))
    raw_tps, provider_tps = statistics.median(raw_runs), statistics.median(provider_runs)
    print(f"model            {provider.model} ({cpu_threads()} threads, {MAX_TOKENS} max tokens, {RUNS} runs)")
    print(f"raw llama_cpp    {raw_tps:8.1f} tokens/s")
    print(f"local provider   {provider_tps:8.1f} tokens/s")
    print(f"ratio            {provider_tps / raw_tps:8.3f}  (goal >= 0.9)")
    raw.close()


if __name__ == "__main__":
    main()
