//! Session context: short request and response snippets kept per client key and session, as a
//! reminder of the conversation (`GET /context/{session_id}`). Bounded in size, and anything that
//! looks like a credential is replaced before it is stored.

use serde::Serialize;
use serde_json::Value;

/// One exchange of a session, as stored and served.
#[derive(Debug, Clone, Serialize)]
pub struct ContextEntry {
    pub at_ms: u64,
    pub request_id: String,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub status: u16,
    pub request: String,
    pub response: String,
}

/// Prefixes of provider and gateway keys.
const KEY_PREFIXES: &[&str] = &[
    "sk-",
    "sk_",
    "apx-",
    "AIza",
    "xai-",
    "gsk_",
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "npm_",
    "ya29.",
    "rk_live_",
    "hf_",
    "pk-",
    "rk-",
    "key-",
    "AKIA",
    "pplx-",
    "r8_",
    "nvapi-",
    // A JWT: base64 of `{"`.
    "eyJ",
];

/// Starts like a provider's or the gateway's key.
fn has_key_prefix(token: &str) -> bool {
    let t = token.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    t.len() >= 12 && KEY_PREFIXES.iter().any(|p| t.starts_with(p))
}

/// Long random-looking strings: tokens, JWTs, base64 keys.
fn looks_random(token: &str) -> bool {
    let t = token.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    t.len() >= 32
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '=' | '.'))
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars().any(|c| c.is_ascii_alphabetic())
}

/// Replaces credential-looking words (whatever follows `Bearer`, or an `Authorization:` header's
/// scheme, and a URL's password) with `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_bearer = false;
    let mut after_authorization = false;
    for (i, word) in text.split_inclusive(char::is_whitespace).enumerate() {
        let bare = word.trim_end();
        let trailing = &word[bare.len()..];
        if bare.is_empty() {
            out.push_str(word);
            continue;
        }
        // A whole word that looks random goes whole (a URL or path has `:` or quotes, so is not one).
        if after_bearer || looks_random(bare) {
            out.push_str("[REDACTED]");
            out.push_str(trailing);
            after_bearer = false;
            after_authorization = false;
            continue;
        }
        // Quoted too: `"Bearer sk-…"`, `'Authorization': 'Basic …'`.
        let unquoted = bare.trim_matches(|c: char| matches!(c, '"' | '\'' | '{' | ','));
        let scheme = ["bearer", "basic", "token", "digest", "apikey"]
            .iter()
            .any(|s| unquoted.eq_ignore_ascii_case(s));
        if after_authorization && !scheme {
            // An `Authorization:` value with no scheme is the credential itself.
            after_authorization = false;
            out.push_str("[REDACTED]");
            out.push_str(trailing);
            continue;
        }
        after_bearer = unquoted.eq_ignore_ascii_case("bearer")
            || (i > 0 && unquoted.eq_ignore_ascii_case("bearer:"))
            // After an `Authorization:` header's scheme (`Basic`, `Token`…), the credential.
            || (after_authorization && scheme);
        after_authorization = unquoted.eq_ignore_ascii_case("authorization:")
            || unquoted.eq_ignore_ascii_case("authorization\":")
            || unquoted.eq_ignore_ascii_case("authorization':");
        redact_runs(&without_url_password(bare), &mut out);
        out.push_str(trailing);
    }
    out
}

/// A URL's password (`scheme://user:PASSWORD@host`) replaced.
fn without_url_password(word: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = word.find("://") else {
        return word.into();
    };
    let authority_start = scheme_end + 3;
    let authority_end = word[authority_start..]
        .find(['/', '?', '#', '"', '\''])
        .map_or(word.len(), |e| authority_start + e);
    let authority = &word[authority_start..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}[REDACTED]{}",
            &word[..authority_start],
            &authority[..colon + 1],
            &word[authority_start + at..]
        )
        .into(),
        _ => word.into(),
    }
}

/// A word's runs that start like a key redacted, its punctuation kept: keys are pasted glued to
/// quotes, `=`, `:` and brackets (`api_key="sk-…"`, `{"key":"sk-…"}`, `OPENAI_API_KEY='sk-…'`). A
/// run counts by its prefix, or by looking random right after a name that says it is a secret
/// (`api_key="0123…"`, `{"token":"…"}`, `PASSWORD=…`): elsewhere, parts of URLs, paths and ids look
/// random too.
fn redact_runs(word: &str, out: &mut String) {
    let key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '=' | '.');
    let mut rest = word;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !key_char(c)).unwrap_or(rest.len());
        let (run, after) = rest.split_at(end);
        let before = &word[..word.len() - rest.len()];
        // `=` also separates a name from its value (`KEY=sk-…`): try the part after the last one.
        let (name, value) = match run.rfind('=') {
            Some(at) if secret_value(&run[..at + 1], &run[at + 1..]) => run.split_at(at + 1),
            _ => ("", run),
        };
        out.push_str(name);
        let named = if name.is_empty() { before } else { name };
        out.push_str(if secret_value(named, value) {
            "[REDACTED]"
        } else {
            value
        });
        let skip = after.chars().next().map_or(0, char::len_utf8);
        out.push_str(&after[..skip]);
        rest = &after[skip..];
    }
}

/// Whether `value` is a credential: it starts like a key, or it looks random and what comes before
/// it names a secret (`…key=`, `"token":"`).
fn secret_value(before: &str, value: &str) -> bool {
    has_key_prefix(value)
        || (looks_random(value) && names_a_secret(before))
        // A value of a password's length, random-looking or not, after a name that is a secret's
        // whole (`password=hunter2!`, `"api_key": "…"`), not merely ends like one (`sort_key`,
        // `monkey`, a bare `key`).
        || (value.len() >= 6 && names_a_secret_exactly(before))
}

/// Whether text ends with the whole name of a secret and what assigns it (`password=`,
/// `"client_secret": "`).
fn names_a_secret_exactly(before: &str) -> bool {
    let name = before.trim_end_matches(['"', '\'', ':', '=', ' ']);
    if name.len() == before.len() {
        return false;
    }
    let start = name
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        .map_or(0, |i| i + 1);
    let name = name[start..].to_ascii_lowercase().replace('-', "_");
    matches!(
        name.as_str(),
        "password"
            | "passwd"
            | "pwd"
            | "secret"
            | "client_secret"
            | "token"
            | "access_token"
            | "refresh_token"
            | "auth_token"
            | "api_key"
            | "apikey"
            | "x_api_key"
            | "secret_key"
            | "private_key"
    ) || name.ends_with("_password")
        || name.ends_with("_secret")
        || name.ends_with("_api_key")
}

/// Whether text ends with a name of a secret and what assigns it (`api_key=`, `"token": "`).
fn names_a_secret(before: &str) -> bool {
    let name = before.trim_end_matches(['"', '\'', ':', '=', ' ']);
    if name.len() == before.len() {
        return false;
    }
    let name = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "credential",
        "auth",
    ]
    .iter()
    .any(|n| name.ends_with(n))
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    let mut it = text.char_indices();
    match it.nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Text of a content value: a string, or the `text` of its parts.
fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
                .collect();
            (!texts.is_empty()).then(|| texts.join(" "))
        }
        _ => None,
    }
}

/// The last user turn of a request in any of the four formats (Chat, Responses, Anthropic,
/// Gemini), redacted and clipped.
pub fn request_snippet(body: &[u8], max: usize) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let from_turns = |turns: &Value, parts_key: &str| {
        turns.as_array().and_then(|turns| {
            turns.iter().rev().find_map(|t| {
                let role = t.get("role").and_then(Value::as_str).unwrap_or("user");
                if role != "user" {
                    return None;
                }
                t.get(parts_key).and_then(content_text)
            })
        })
    };
    let text = from_turns(&v["messages"], "content")
        .or_else(|| match &v["input"] {
            Value::String(s) => Some(s.clone()),
            turns @ Value::Array(_) => from_turns(turns, "content"),
            _ => None,
        })
        .or_else(|| from_turns(&v["contents"], "parts"))
        .unwrap_or_default();
    clip(&redact(&text), max)
}

/// Collects the generated text of a response or a stream: `content`/`text`/`delta` strings of
/// any format, in order.
fn collect_text(v: &Value, out: &mut String, depth: usize) {
    if depth > 8 {
        return;
    }
    match v {
        Value::Object(map) => {
            // Closing events repeat the whole text (Responses `*.done`, `response.completed`).
            if let Some(t) = map.get("type").and_then(Value::as_str) {
                if t.ends_with(".done") || t == "response.completed" {
                    return;
                }
            }
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("content" | "text" | "delta" | "output_text", Value::String(s)) => out.push_str(s),
                    // Never echo what the request said, or usage numbers.
                    ("usage" | "usageMetadata" | "input" | "messages", _) => {}
                    _ => collect_text(v, out, depth + 1),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_text(i, out, depth + 1)),
        _ => {}
    }
}

/// The values of the text fields (`content`, `text`, `output_text`) of a JSON document cut short,
/// in order, the last one as far as it goes.
fn strings_of_cut_json(json: &str, out: &mut String, max: usize) {
    let mut rest = json;
    while out.chars().count() <= max {
        let found = ["\"content\":", "\"text\":", "\"output_text\":"]
            .iter()
            .filter_map(|k| rest.find(k).map(|at| (at, k.len())))
            .min();
        let Some((at, len)) = found else { return };
        let value = rest[at + len..].trim_start();
        rest = &rest[at + len..];
        let Some(literal) = value.strip_prefix('"') else {
            continue;
        };
        // To the closing quote, or (cut) to the end, without half an escape.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in literal.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let body = &literal[..end.unwrap_or(literal.len())];
        // A cut may fall inside an escape (`\u00e9` is six characters): as much as reads.
        let whole = (0..=6.min(body.len()))
            .filter_map(|cut| body.get(..body.len() - cut))
            .find_map(|b| serde_json::from_str::<String>(&format!("\"{b}\"")).ok());
        if let Some(text) = whole {
            out.push_str(&text);
        }
        if end.is_none() {
            return;
        }
    }
}

/// The answer's text from the first bytes sent to the client (a JSON body or SSE events),
/// redacted and clipped.
pub fn response_snippet(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        collect_text(&v, &mut out, 0);
    } else if bytes.trim_ascii_start().starts_with(b"{") {
        // A whole answer longer than what is kept of it: not a document any more, but its text
        // strings are read as they come.
        strings_of_cut_json(&String::from_utf8_lossy(bytes), &mut out, max);
    } else {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                collect_text(&v, &mut out, 0);
            }
            if out.len() > max * 4 {
                break;
            }
        }
    }
    clip(&redact(&out), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole answer past what is kept of it (16 KiB) is no JSON document any more: its text is
    /// read from the part there is.
    #[test]
    fn the_start_of_a_whole_answer_cut_short_is_its_text() {
        let answer = serde_json::json!({"id": "c1", "choices": [{"message": {"role": "assistant",
            "content": format!("Hello \"world\"\n{}", "x".repeat(20_000))}}]})
        .to_string();
        let cut = &answer.as_bytes()[..16 * 1024];
        let snippet = response_snippet(cut, 20);
        assert_eq!(snippet, format!("Hello \"world\"\n{}…", "x".repeat(6)));
    }

    #[test]
    fn redacts_keys_and_bearer_tokens() {
        let r = redact("my key is sk-proj-abcdefghijklmnop and Bearer abc.def please");
        assert_eq!(r, "my key is [REDACTED] and Bearer [REDACTED] please");
        let r = redact("token: 9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c, ok");
        assert!(!r.contains("9f8e7d6c5b4a"), "{r}");
        assert_eq!(redact("plain words stay as they are"), "plain words stay as they are");
        assert!(redact("\"apx-0123456789abcdef\"").contains("[REDACTED]"));
        // A JWT, and keys of Perplexity, Replicate and NVIDIA, glued to JSON's punctuation.
        for key in [
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            "pplx-0123456789abcdef",
            "r8_0123456789abcdef",
            "nvapi-0123456789abcdef",
        ] {
            let r = redact(&format!(r#"{{"token":"{key}"}}"#));
            assert_eq!(r, r#"{"token":"[REDACTED]"}"#, "{key}");
        }
    }

    /// Credentials in headers pasted as code (quoted, any scheme) and passwords in URLs go too.
    #[test]
    fn quoted_headers_other_schemes_and_url_passwords_are_redacted() {
        for (text, gone) in [
            (r#"headers = {"Authorization": "Bearer abc123def456"}"#, "abc123def456"),
            ("'Authorization': 'Basic dXNlcjpwYXNz'", "dXNlcjpwYXNz"),
            ("Authorization: Token 7f3a9c", "7f3a9c"),
            ("DATABASE_URL=postgres://app:s3cret-pw@db:5432/x", "s3cret-pw"),
            (r#"{"url": "https://bob:hunter22@example.com/path"}"#, "hunter22"),
            ("password=hunter2!", "hunter2!"),
        ] {
            let r = redact(text);
            assert!(!r.contains(gone), "{text} -> {r}");
            assert!(r.contains("[REDACTED]"), "{text} -> {r}");
        }
        // The rest of a URL stays, and one without a password is left whole.
        assert_eq!(
            redact("postgres://app:pw123456@db:5432/x"),
            "postgres://app:[REDACTED]@db:5432/x"
        );
        assert_eq!(redact("see https://example.com/a:b@c"), "see https://example.com/a:b@c");
        assert_eq!(redact("a basic question"), "a basic question");
        // A raw token after `Authorization:` is the credential.
        assert_eq!(redact("Authorization: 0123456789abcdef"), "Authorization: [REDACTED]");
        // Code and data that merely name keys keep their values.
        for plain in [
            "sorted(x, key=lambda v: v[1])",
            r#"{"monkey":"banana"}"#,
            r#"{"hotkey":"ctrl+c"}"#,
            r#"{"sort_key":"created_at"}"#,
            r#"{"key":"Escape"}"#,
            "Key=Escape",
        ] {
            assert_eq!(redact(plain), plain);
        }
    }

    /// A random-looking value with no known prefix goes when a name says it is a secret (an Azure
    /// key is 32 hex digits); the same value under another name (an id) stays.
    #[test]
    fn random_values_named_as_secrets_are_redacted() {
        let hex = "0123456789abcdef0123456789abcdef";
        for (text, want) in [
            (format!(r#"api_key="{hex}""#), r#"api_key="[REDACTED]""#.to_string()),
            (
                format!(r#"{{"token":"{hex}"}}"#),
                r#"{"token":"[REDACTED]"}"#.to_string(),
            ),
            (format!("secret='{hex}'"), "secret='[REDACTED]'".to_string()),
            (
                format!(r#"{{"password":"{hex}"}}"#),
                r#"{"password":"[REDACTED]"}"#.to_string(),
            ),
            (format!(r#"{{"id":"{hex}"}}"#), format!(r#"{{"id":"{hex}"}}"#)),
        ] {
            assert_eq!(redact(&text), want, "{text}");
        }
        for key in [
            "xoxb-1234567890-abcdefghij",
            "glpat-abcdefghij0123456789",
            "ghs_abcdefghij0123456789",
        ] {
            assert_eq!(redact(&format!("'{key}'")), "'[REDACTED]'", "{key}");
        }
    }

    #[test]
    fn keys_glued_to_punctuation_are_redacted_and_the_punctuation_kept() {
        for (text, want) in [
            (
                r#"client = OpenAI(api_key="sk-proj-abcdefghijklmnop")"#,
                r#"client = OpenAI(api_key="[REDACTED]")"#,
            ),
            (
                r#"{"api_key":"sk-abcdefghijklmnopqrst"}"#,
                r#"{"api_key":"[REDACTED]"}"#,
            ),
            (
                "OPENAI_API_KEY='sk-abcdefghijklmnopqrst'",
                "OPENAI_API_KEY='[REDACTED]'",
            ),
            ("export KEY=sk-abcdefghijklmnopqrst", "export KEY=[REDACTED]"),
            ("see (AIzaSyA1234567890abcdefghij).", "see ([REDACTED])."),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
        for plain in [
            "f(x) = x*2, y=3",
            "https://docs.python.org/3/library/asyncio-task.html",
            r#"{"path":"/home/u/project2/src/components/Button.tsx"}"#,
            r#"{"id":"chatcmpl-0123456789abcdef0123456789abcdef"}"#,
            "émigré: «ok»",
        ] {
            assert_eq!(redact(plain), plain);
        }
    }

    #[test]
    fn snippets_from_every_format() {
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":"hello sk-abcdefghijklmnopqrstuv"}]}"#;
        assert_eq!(request_snippet(chat, 100), "hello [REDACTED]");
        let responses = br#"{"model":"m","input":"just text"}"#;
        assert_eq!(request_snippet(responses, 100), "just text");
        let anthropic = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"parts"}]}]}"#;
        assert_eq!(request_snippet(anthropic, 100), "parts");
        let gemini = br#"{"contents":[{"role":"user","parts":[{"text":"gem"}]}]}"#;
        assert_eq!(request_snippet(gemini, 100), "gem");
        assert_eq!(request_snippet(b"not json", 100), "");
        assert_eq!(
            request_snippet(br#"{"messages":[{"role":"user","content":"abcdef"}]}"#, 3),
            "abc…"
        );

        let body =
            br#"{"choices":[{"message":{"role":"assistant","content":"Hi there"}}],"usage":{"prompt_tokens":1}}"#;
        assert_eq!(response_snippet(body, 100), "Hi there");
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(response_snippet(sse, 100), "Hello");
    }
}
