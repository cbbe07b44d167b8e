"""Drives an endpoint with the official Anthropic SDK and prints what the SDK saw, as one JSON object.

usage: anthropic_client.py BASE_URL API_KEY MODEL MODE
BASE_URL without /v1 (the SDK appends /v1/messages).
MODE:
  text          messages.create
  text_stream   messages.stream(...): text from the text events and from get_final_message()
  tools         messages.create with two tools
  tools_stream  messages.stream with two tools: the SDK rebuilds the tool_use inputs from
                input_json_delta events
  raw_stream    messages.create(stream=True), listing the raw event types in order
  models        models.list()
  count_tokens  messages.count_tokens (input_tokens)

Output fields:
  text         the text blocks joined (None when there is none)
  tool_calls   [{"id", "name", "args"}] of the tool_use blocks, in order (args = input)
  thinking     the thinking blocks' text joined (None when there is none); signature: the last one's
  stop         stop_reason
  usage        input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens
  model, id    as the SDK parsed them
  blocks       the content block types in order
  delta_text   text streams: the text joined from the SDK's text events
  events       raw_stream: event types in order
  ids          models: sorted ids
On errors: {"error": <exception class>, "status": <http status>, "body": …} for API status errors
(a mid-stream `event: error` raises one with status 200), {"error": <class>, "message": …} otherwise.
"""
import json
import sys

import anthropic

TOOLS = [
    {"name": "get_weather", "description": "Weather in a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "description": "Time in a zone",
     "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}},
]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris, and the time in CET?"}]


def message_out(m):
    texts = [b.text for b in m.content if b.type == "text"]
    thinking = [b for b in m.content if b.type == "thinking"]
    calls = [{"id": b.id, "name": b.name, "args": b.input} for b in m.content if b.type == "tool_use"]
    u = m.usage
    return {
        "text": "".join(texts) if texts else None,
        "tool_calls": calls,
        "thinking": "".join(b.thinking for b in thinking) if thinking else None,
        "signature": thinking[-1].signature if thinking else None,
        "stop": m.stop_reason,
        "usage": {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cache_creation_input_tokens": u.cache_creation_input_tokens,
        },
        "model": m.model,
        "id": m.id,
        "blocks": [b.type for b in m.content],
    }


def images_of(m):
    """The base64 of each image block, however the SDK built a block its types do not list."""
    out = []
    for b in m.content:
        kind = b.get("type") if isinstance(b, dict) else getattr(b, "type", None)
        if kind == "image":
            source = b.get("source") if isinstance(b, dict) else getattr(b, "source", None)
            out.append(source.get("data") if isinstance(source, dict) else getattr(source, "data", None))
    return out


def main() -> None:
    base_url, key, model, mode = sys.argv[1:5]
    client = anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=20)
    out = {}
    try:
        kw = {"model": model, "max_tokens": 1024, "messages": MESSAGES}
        if mode in ("tools", "tools_stream"):
            kw["tools"] = TOOLS
        if mode in ("text", "tools"):
            out = message_out(client.messages.create(**kw))
        elif mode in ("text_stream", "tools_stream"):
            deltas = []
            with client.messages.stream(**kw) as stream:
                for event in stream:
                    if event.type == "text":
                        deltas.append(event.text)
                final = stream.get_final_message()
            out = message_out(final)
            out["delta_text"] = "".join(deltas)
        elif mode == "images":
            m = client.messages.create(**kw)
            out = {"blocks": [getattr(b, "type", None) for b in m.content], "images": images_of(m)}
        elif mode == "images_stream":
            with client.messages.stream(**kw) as stream:
                for _ in stream:
                    pass
                m = stream.get_final_message()
            out = {"blocks": [getattr(b, "type", None) for b in m.content], "images": images_of(m)}
        elif mode == "raw_stream":
            events = []
            with client.messages.create(stream=True, **kw) as stream:
                for event in stream:
                    events.append(event.type)
            out = {"events": events}
        elif mode == "models":
            out = {"ids": sorted(m.id for m in client.models.list())}
        elif mode == "count_tokens":
            out = {"input_tokens": client.messages.count_tokens(model=model, messages=MESSAGES).input_tokens}
        else:
            raise SystemExit(f"unknown mode {mode}")
    except anthropic.APIStatusError as e:
        out = {"error": type(e).__name__, "status": e.status_code, "body": e.body}
    except Exception as e:  # noqa: BLE001 - stream errors and accumulator failures are results too
        out = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
