"""Drives the gateway with the official OpenAI SDK and prints what the SDK saw, as JSON.

usage: openai_client.py BASE_URL API_KEY MODEL MODE
MODE: chat | chat_stream | responses | responses_stream | models
"""
import json
import sys

import openai


def main() -> None:
    base_url, key, model, mode = sys.argv[1:5]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
    out = {}
    try:
        if mode == "chat":
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            out = {"text": r.choices[0].message.content, "model": r.model, "finish": r.choices[0].finish_reason}
        elif mode == "chat_stream":
            parts, finish = [], None
            with client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True
            ) as stream:
                for chunk in stream:
                    for c in chunk.choices:
                        if c.delta.content:
                            parts.append(c.delta.content)
                        finish = c.finish_reason or finish
            out = {"text": "".join(parts), "chunks": len(parts), "finish": finish}
        elif mode == "responses":
            r = client.responses.create(model=model, input="hi")
            out = {"text": r.output_text, "status": r.status}
        elif mode == "responses_stream":
            deltas, final = [], None
            with client.responses.stream(model=model, input="hi") as stream:
                for event in stream:
                    if event.type == "response.output_text.delta":
                        deltas.append(event.delta)
                final = stream.get_final_response()
            out = {"text": "".join(deltas), "status": final.status, "final_text": final.output_text}
        elif mode == "models":
            out = {"ids": sorted(m.id for m in client.models.list())}
    except openai.APIStatusError as e:
        out = {"error": type(e).__name__, "status": e.status_code, "body": e.body}
    except openai.APIError as e:
        out = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
