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

#[cfg(test)]
mod tests {
    use super::*;

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
