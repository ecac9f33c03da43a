"""The real-client check of `vpd serve` (issue 6): the official `openai` Python SDK against
a running server. Run by tests/openai_sdk.rs with the project-local venv that `make test`
makes (.venv-sdk). Usage: python tools/openai_sdk_check.py BASE_URL MODEL
"""
import sys

import openai


def main() -> None:
    base, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)

    models = [m.id for m in client.models.list()]
    assert models == [model], models

    c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert c.object == "text_completion" and len(c.choices) == 1, c
    assert c.choices[0].finish_reason in ("length", "stop"), c
    assert c.usage.completion_tokens >= 1 and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens, c.usage
    plain = c.choices[0].text

    parts, usage = [], None
    for chunk in client.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                           temperature=0, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        parts.extend(ch.text for ch in chunk.choices)
    assert "".join(parts) == plain, (parts, plain)
    assert usage is not None and usage.completion_tokens == c.usage.completion_tokens, usage

    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                          max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content, chat
    deltas = []
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                                max_tokens=8, temperature=0, stream=True):
        deltas.extend(ch.delta.content or "" for ch in chunk.choices)
    assert "".join(deltas) == chat.choices[0].message.content, (deltas, chat)

    lp = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=2)
    assert len(lp.choices[0].logprobs.token_logprobs) == lp.usage.completion_tokens, lp
    assert all(x <= 0 for x in lp.choices[0].logprobs.token_logprobs), lp
    clp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                         max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    assert len(clp.choices[0].logprobs.content) == clp.usage.completion_tokens, clp
    assert all(len(t.top_logprobs) == 2 for t in clp.choices[0].logprobs.content), clp

    try:
        # (The SDK itself refuses to send NaN; an out-of-range value reaches the server.)
        client.completions.create(model=model, prompt="x", max_tokens=4, temperature=5.0)
        raise AssertionError("temperature 5 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "temperature" in str(e), e
    print("openai SDK", openai.__version__, ": completions, streaming, chat, logprobs and errors OK")


if __name__ == "__main__":
    main()
