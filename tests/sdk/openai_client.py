"""Drives an endpoint with the official OpenAI SDK and prints what the SDK saw, as one JSON object.

usage: openai_client.py BASE_URL API_KEY MODEL MODE
MODE:
  chat                    chat.completions.create
  chat_stream             create(stream=True), iterating the raw chunks (text, finish, chunk count)
  chat_stream_usage       the same with stream_options.include_usage (usage from the last chunk)
  chat_tools              create with two tools
  chat_final_stream       chat.completions.stream(...).get_final_completion(), text, include_usage
  chat_tools_stream       the same with two tools: the SDK rebuilds the tool calls by index
  responses               responses.create
  responses_stream        responses.stream(...): text from the deltas and from get_final_response()
  responses_tools         responses.create with two tools
  responses_tools_stream  responses.stream with two tools: deltas and get_final_response()
  models                  models.list()
  embeddings              embeddings.create for two texts (vectors: the SDK's decoded floats)

Output fields (absent when not applicable):
  text         the assistant text (None when the answer has no text)
  tool_calls   [{"id", "name", "args"}] in order; args parsed from the JSON arguments string
               (unparseable: {"unparsed": "<raw>"})
  finish       chat finish_reason
  status       Responses status; incomplete_reason when incomplete
  usage        chat: prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens;
               Responses: input_tokens, output_tokens, total_tokens, cached_tokens, reasoning_tokens
  model, id    as the SDK parsed them
  chunks       number of text deltas (chat_stream), events (Responses streams)
  reasoning    chat: the message's non-standard reasoning_content (DeepSeek/vLLM style);
               Responses: the reasoning items' summary texts joined; encrypted_content alongside
  delta_text, delta_args   Responses streams: text and {item_id: arguments} rebuilt from the deltas
  ids          models: sorted model ids
On errors: {"error": <exception class>, "status": <http status>, "body": …} for API status errors,
{"error": <class>, "message": …} for any other exception (stream errors, accumulator failures).
"""
import json
import sys

import openai

TOOLS_CHAT = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
                                      "parameters": {"type": "object", "properties": {"tz": {"type": "string"}},
                                                     "required": ["tz"]}}},
]
TOOLS_RESPONSES = [{"type": "function", **t["function"]} for t in TOOLS_CHAT]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris, and the time in CET?"}]
EMBED_TEXTS = ["the quick fox", "jumps"]


def parse_args(raw):
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return {"unparsed": raw}


def chat_usage(u):
    if u is None:
        return None
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "cached_tokens": u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else None,
        "reasoning_tokens": u.completion_tokens_details.reasoning_tokens if u.completion_tokens_details else None,
    }


def responses_usage(u):
    if u is None:
        return None
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "cached_tokens": u.input_tokens_details.cached_tokens if u.input_tokens_details else None,
        "reasoning_tokens": u.output_tokens_details.reasoning_tokens if u.output_tokens_details else None,
    }


def chat_out(r):
    choice = r.choices[0]
    calls = [
        {"id": c.id, "name": c.function.name, "args": parse_args(c.function.arguments)}
        for c in (choice.message.tool_calls or [])
    ]
    return {
        "text": choice.message.content,
        "tool_calls": calls,
        "reasoning": getattr(choice.message, "reasoning_content", None),
        "finish": choice.finish_reason,
        "usage": chat_usage(r.usage),
        "model": r.model,
        "id": r.id,
    }


def responses_out(r):
    texts, calls, reasoning, encrypted = [], [], [], None
    for item in r.output:
        if item.type == "reasoning":
            reasoning.extend(s.text for s in item.summary)
            encrypted = item.encrypted_content
        elif item.type == "message":
            texts.extend(c.text for c in item.content if c.type == "output_text")
        elif item.type == "function_call":
            calls.append({"id": item.call_id, "name": item.name, "args": parse_args(item.arguments)})
    out = {
        "text": "".join(texts) if texts else None,
        "tool_calls": calls,
        "reasoning": "".join(reasoning) if reasoning else None,
        "encrypted_content": encrypted,
        "status": r.status,
        "usage": responses_usage(r.usage),
        "model": r.model,
        "id": r.id,
    }
    if r.incomplete_details is not None:
        out["incomplete_reason"] = r.incomplete_details.reason
    return out


def image_urls(message):
    """The images a model made, in OpenRouter's `images` (an extra field the SDK keeps as sent)."""
    return [i.get("image_url", {}).get("url") if isinstance(i, dict) else repr(i) for i in getattr(message, "images", None) or []]


def responses_images(r):
    return {
        "text": r.output_text,
        "images": [item.result for item in r.output if item.type == "image_generation_call"],
        "formats": [getattr(item, "output_format", None) for item in r.output if item.type == "image_generation_call"],
    }


def responses_stream(client, model, **kw):
    deltas, args, events = [], {}, 0
    with client.responses.stream(model=model, input=MESSAGES[0]["content"], **kw) as stream:
        for event in stream:
            events += 1
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.function_call_arguments.delta":
                args[event.item_id] = args.get(event.item_id, "") + event.delta
        final = stream.get_final_response()
    out = responses_out(final)
    out.update({"delta_text": "".join(deltas), "delta_args": args, "chunks": events, "final_text": final.output_text})
    return out


def main() -> None:
    base_url, key, model, mode = sys.argv[1:5]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
    out = {}
    try:
        if mode == "chat":
            out = chat_out(client.chat.completions.create(model=model, messages=MESSAGES))
        elif mode == "chat_tools":
            out = chat_out(client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS_CHAT))
        elif mode in ("chat_stream", "chat_stream_usage"):
            parts, finish, usage = [], None, None
            extra = {"stream_options": {"include_usage": True}} if mode == "chat_stream_usage" else {}
            with client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **extra) as stream:
                for chunk in stream:
                    if chunk.usage is not None:
                        usage = chat_usage(chunk.usage)
                    for c in chunk.choices:
                        if c.delta.content:
                            parts.append(c.delta.content)
                        finish = c.finish_reason or finish
            out = {"text": "".join(parts), "chunks": len(parts), "finish": finish, "usage": usage}
        elif mode in ("chat_final_stream", "chat_tools_stream"):
            tools = {"tools": TOOLS_CHAT} if mode == "chat_tools_stream" else {}
            with client.chat.completions.stream(
                model=model, messages=MESSAGES, stream_options={"include_usage": True}, **tools
            ) as stream:
                for _ in stream:
                    pass
                out = chat_out(stream.get_final_completion())
        elif mode == "chat_images":
            r = client.chat.completions.create(model=model, messages=MESSAGES)
            out = {"text": r.choices[0].message.content, "images": image_urls(r.choices[0].message)}
        elif mode == "chat_images_stream":
            # The stream helper's accumulator is the judge: it merges list entries by their index.
            with client.chat.completions.stream(model=model, messages=MESSAGES) as stream:
                for _ in stream:
                    pass
                message = stream.get_final_completion().choices[0].message
            out = {"text": message.content, "images": image_urls(message)}
        elif mode == "responses_images":
            out = responses_images(client.responses.create(model=model, input=MESSAGES[0]["content"]))
        elif mode == "responses_images_stream":
            with client.responses.stream(model=model, input=MESSAGES[0]["content"]) as stream:
                for _ in stream:
                    pass
                out = responses_images(stream.get_final_response())
        elif mode == "responses":
            out = responses_out(client.responses.create(model=model, input=MESSAGES[0]["content"]))
            out["final_text"] = out["text"]
        elif mode == "responses_tools":
            out = responses_out(client.responses.create(model=model, input=MESSAGES[0]["content"], tools=TOOLS_RESPONSES))
        elif mode == "responses_stream":
            out = responses_stream(client, model)
            # The first tests compare the streamed text.
            out["text"] = out["delta_text"]
        elif mode == "responses_tools_stream":
            out = responses_stream(client, model, tools=TOOLS_RESPONSES)
        elif mode == "models":
            out = {"ids": sorted(m.id for m in client.models.list())}
        elif mode == "embeddings":
            # The SDK asks for base64 and decodes it itself.
            r = client.embeddings.create(model=model, input=EMBED_TEXTS)
            out = {"vectors": [list(d.embedding) for d in r.data], "model": r.model}
        else:
            raise SystemExit(f"unknown mode {mode}")
    except openai.APIStatusError as e:
        out = {"error": type(e).__name__, "status": e.status_code, "body": e.body}
    except Exception as e:  # noqa: BLE001 - stream errors and accumulator failures are results too
        out = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
