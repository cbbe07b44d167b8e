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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_without_the_aggregator_s_prefix() {
        assert_eq!(bare("OpenAI/O3-Mini"), "o3-mini");
        assert!(is_o_series(&bare("openai/o4-mini")));
        assert!(!is_o_series("omni-moderation") && !is_o_series("gpt-4o"));
    }
}
