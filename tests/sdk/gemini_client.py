"""Drives an endpoint with the official Google Gen AI SDK and prints what the SDK saw, as one JSON object.

usage: gemini_client.py BASE_URL API_KEY MODEL MODE [API_VERSION]
BASE_URL without the version; API_VERSION: v1beta (the default here), v1, or "sdk" for the SDK's own
default (v1 in google-genai 3.6.1).
MODE:
  text          models.generate_content
  text_stream   models.generate_content_stream (SSE, one response object per `data:` event)
  tools         generate_content with two function declarations
  tools_stream  generate_content_stream with two function declarations
  models        models.list()
  count_tokens  models.count_tokens (total_tokens)

Output fields:
  text         the text parts joined across the response/chunks, thought parts excluded (None if none)
  tool_calls   [{"id", "name", "args", "signature"}] of the functionCall parts in order; signature is
               the part's thought_signature as base64 (None when absent)
  thoughts     the thought parts' text joined (None when there is none)
  finish       the last finish_reason seen (e.g. "STOP", "MAX_TOKENS")
  usage        the last usage_metadata: prompt_token_count, candidates_token_count, total_token_count,
               cached_content_token_count, thoughts_token_count
  model        model_version; response_id
  chunks       number of response objects (streams)
  ids          models: sorted names
On errors: {"error": <exception class>, "status": <http code>, "status_text": <e.g. UNAVAILABLE>,
"message": …} for API errors (mid-stream `{"error":…}` chunks included), {"error": <class>, "message": …}
otherwise.
"""
import base64
import json
import sys

from google import genai
from google.genai import errors, types

TOOLS = [
    types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_weather",
                description="Weather in a city",
                parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            ),
            types.FunctionDeclaration(
                name="get_time",
                description="Time in a zone",
                parameters={"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
            ),
        ]
    )
]
PROMPT = "What is the weather in Paris, and the time in CET?"


class Seen:
    def __init__(self):
        self.thoughts = []
        self.texts, self.calls, self.finish, self.usage, self.model, self.response_id, self.chunks = (
            [], [], None, None, None, None, 0)

    def add(self, r):
        self.chunks += 1
        self.model = r.model_version or self.model
        self.response_id = r.response_id or self.response_id
        if r.usage_metadata is not None:
            u = r.usage_metadata
            self.usage = {
                "prompt_token_count": u.prompt_token_count,
                "candidates_token_count": u.candidates_token_count,
                "total_token_count": u.total_token_count,
                "cached_content_token_count": u.cached_content_token_count,
                "thoughts_token_count": u.thoughts_token_count,
            }
        for cand in r.candidates or []:
            if cand.finish_reason is not None:
                self.finish = getattr(cand.finish_reason, "value", str(cand.finish_reason))
            for part in (cand.content.parts if cand.content else None) or []:
                if part.text and part.thought:
                    self.thoughts.append(part.text)
                elif part.text:
                    self.texts.append(part.text)
                if part.function_call is not None:
                    sig = part.thought_signature
                    self.calls.append({
                        "id": part.function_call.id,
                        "name": part.function_call.name,
                        "args": part.function_call.args,
                        "signature": base64.b64encode(sig).decode() if sig else None,
                    })

    def out(self):
        return {
            "text": "".join(self.texts) if self.texts else None,
            "tool_calls": self.calls,
            "thoughts": "".join(self.thoughts) if self.thoughts else None,
            "finish": self.finish,
            "usage": self.usage,
            "model": self.model,
            "response_id": self.response_id,
            "chunks": self.chunks,
        }


def main() -> None:
    base_url, key, model, mode = sys.argv[1:5]
    version = sys.argv[5] if len(sys.argv) > 5 else "v1beta"
    opts = {"base_url": base_url, "timeout": 20_000}
    if version != "sdk":
        opts["api_version"] = version
    client = genai.Client(api_key=key, http_options=types.HttpOptions(**opts))
    out = {}
    try:
        config = types.GenerateContentConfig(tools=TOOLS) if mode.startswith("tools") else None
        seen = Seen()
        if mode in ("text", "tools"):
            seen.add(client.models.generate_content(model=model, contents=PROMPT, config=config))
            out = seen.out()
        elif mode in ("text_stream", "tools_stream"):
            for chunk in client.models.generate_content_stream(model=model, contents=PROMPT, config=config):
                seen.add(chunk)
            out = seen.out()
        elif mode == "models":
            out = {"ids": sorted(m.name for m in client.models.list())}
        elif mode == "count_tokens":
            out = {"total_tokens": client.models.count_tokens(model=model, contents=PROMPT).total_tokens}
        else:
            raise SystemExit(f"unknown mode {mode}")
    except errors.APIError as e:
        out = {"error": type(e).__name__, "status": e.code, "status_text": e.status, "message": e.message}
    except Exception as e:  # noqa: BLE001 - stream errors and parse failures are results too
        out = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
