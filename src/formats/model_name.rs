//! What a model's name tells where the API does not: the few request rules that differ by model
//! (which OpenAI models take `reasoning_effort` or `max_completion_tokens`, how much output room a
//! Claude model has) go by the name, compared without an aggregator's `vendor/` prefix.

/// `model` without an aggregator's `vendor/` prefix (`openai/o3` → `o3`), in lower case.
pub(crate) fn bare(model: &str) -> String {
    model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase()
}

/// An OpenAI reasoning model of the `o` series (`o1`, `o3-mini`, `o4-mini-2025-04-16`), by its
/// bare name.
pub(crate) fn is_o_series(bare: &str) -> bool {
    bare.strip_prefix('o')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// A Gemini-family model's version by its bare name, as (major, minor): `gemini-2.5-flash` is
/// (2, 5), `gemini-3-pro-preview` (3, 0); Gemma and the first Gemini (`gemini-pro`) count as older
/// than any; `None` for another name (`gemini-flash-latest`, an experiment, another family).
pub(crate) fn gemini_version(bare: &str) -> Option<(u32, u32)> {
    if bare.starts_with("gemma") {
        return Some((0, 0));
    }
    let rest = bare.strip_prefix("gemini-")?;
    if rest.starts_with("pro") {
        return Some((1, 0));
    }
    let mut parts = rest.split('-').next()?.split('.');
    let major = parts.next()?.parse().ok()?;
    Some((major, parts.next().and_then(|m| m.parse().ok()).unwrap_or(0)))
}

/// A Claude model's family and version by its bare name: `claude-sonnet-4-5-20250929` is
/// ("sonnet", 4, 5), `claude-opus-4-20250514` ("opus", 4, 0), `claude-3-7-sonnet-latest`
/// ("sonnet", 3, 7); Bedrock's (`anthropic.claude-sonnet-4-5-20250929-v1:0`) and Vertex's
/// (`claude-sonnet-4-5@20250929`) ids too; `None` for another name.
pub(crate) fn claude_version(bare: &str) -> Option<(&str, u32, u32)> {
    let name = &bare[bare.find("claude-")? + "claude-".len()..];
    let name = name.split(['@', ':']).next()?;
    // Aggregators write the version dotted (`claude-sonnet-4.5`, `claude-3.7-sonnet`).
    let parts: Vec<&str> = name.split(['-', '.']).collect();
    // A minor version is one or two digits; a date (eight) is no version.
    let minor = |p: Option<&&str>| p.filter(|m| m.len() <= 2).and_then(|m| m.parse().ok()).unwrap_or(0);
    match parts.first()?.parse::<u32>() {
        // The older order: `claude-3-5-haiku`, `claude-3-opus`.
        Ok(major) => {
            let has_minor = parts.get(1).is_some_and(|m| m.parse::<u32>().is_ok() && m.len() <= 2);
            let family = parts.get(if has_minor { 2 } else { 1 })?;
            Some((family, major, if has_minor { minor(parts.get(1)) } else { 0 }))
        }
        Err(_) => Some((parts[0], parts.get(1)?.parse().ok()?, minor(parts.get(2)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_versions_are_read_in_either_order() {
        for (name, want) in [
            ("claude-sonnet-4-5-20250929", ("sonnet", 4, 5)),
            ("claude-opus-4-1", ("opus", 4, 1)),
            ("claude-opus-4-20250514", ("opus", 4, 0)),
            ("claude-haiku-4-5", ("haiku", 4, 5)),
            ("claude-3-7-sonnet-latest", ("sonnet", 3, 7)),
            ("claude-3-opus-20240229", ("opus", 3, 0)),
            ("anthropic.claude-sonnet-4-5-20250929-v1:0", ("sonnet", 4, 5)),
            ("claude-sonnet-4-5@20250929", ("sonnet", 4, 5)),
            ("claude-opus-4@20250514", ("opus", 4, 0)),
            ("claude-sonnet-4.5", ("sonnet", 4, 5)),
            ("claude-3.7-sonnet", ("sonnet", 3, 7)),
        ] {
            assert_eq!(claude_version(name), Some(want), "{name}");
        }
        assert_eq!(claude_version("glm-4.6"), None);
    }

    #[test]
    fn names_are_read_without_the_aggregator_s_prefix() {
        assert_eq!(bare("OpenAI/O3-Mini"), "o3-mini");
        assert!(is_o_series(&bare("openai/o4-mini")));
        assert!(!is_o_series("omni-moderation") && !is_o_series("gpt-4o"));
        assert_eq!(gemini_version(&bare("models/gemini-2.5-flash")), Some((2, 5)));
        assert_eq!(gemini_version("gemini-3-pro-preview"), Some((3, 0)));
        assert_eq!(gemini_version("gemma-3-27b-it"), Some((0, 0)));
        assert_eq!(gemini_version("gemini-flash-latest"), None);
    }
}
