//! `LOG_LEVEL` as a `tracing` filter. It takes the original product's names (`WARNING`,
//! `CRITICAL`, any case) besides tracing's own, refuses what would silently log nothing, and keeps
//! the libraries that would print raw headers or bodies at `trace` (Pingora writes the upstream
//! request head with its `authorization` header) at `debug` unless a directive names them.

/// Libraries whose `trace` output carries request heads or bodies.
const WIRE_TRACERS: &[&str] = &["pingora_core", "pingora_proxy", "hyper", "hyper_util", "h2", "reqwest"];

/// The filter to install for a `LOG_LEVEL` value, or why it is not one.
pub fn log_filter(spec: &str) -> Result<String, String> {
    let mut directives = Vec::new();
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, directive),
        };
        let level = level_name(level).ok_or_else(|| {
            format!("`{level}` is not a log level (trace, debug, info, warn/warning, error/critical, off; for one target: target=level)")
        })?;
        directives.push(match target {
            Some(target) => format!("{target}={level}"),
            None => level.to_string(),
        });
    }
    if directives.is_empty() {
        return Err("is empty".into());
    }
    // Only a directive for the whole library lifts its cap: one for a module of it is more
    // specific than the cap and overrides it there anyway.
    let named = |lib: &str| {
        directives
            .iter()
            .any(|d| d.split_once('=').is_some_and(|(t, _)| t == lib))
    };
    let caps: Vec<String> = WIRE_TRACERS
        .iter()
        .filter(|lib| !named(lib))
        .map(|lib| format!("{lib}=debug"))
        .collect();
    // A cap only lowers: it is added only where the default would let `trace` through.
    if directives.iter().any(|d| d == "trace") {
        directives.extend(caps);
    }
    let filter = directives.join(",");
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| e.to_string())?;
    Ok(filter)
}

/// A level in tracing's spelling, from either spelling.
fn level_name(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        "off" => "off",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_names_and_tracing_directives_are_taken() {
        assert_eq!(log_filter("WARNING").unwrap(), "warn");
        assert_eq!(log_filter("CRITICAL").unwrap(), "error");
        assert_eq!(log_filter(" info , apiproxy=DEBUG ").unwrap(), "info,apiproxy=debug");
    }

    /// Refused: what is no level (a typo such as `warnings` would silence every log), and a bare
    /// target (`apiproxy`, which tracing reads as "everything of apiproxy, nothing else": write
    /// `apiproxy=trace`).
    #[test]
    fn what_is_no_level_is_refused() {
        for bad in ["", " , ", "warnings", "apiproxy", "apiproxy=loud"] {
            assert!(log_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trace_keeps_wire_printing_libraries_at_debug_unless_named() {
        let f = log_filter("trace").unwrap();
        assert!(f.starts_with("trace,") && f.contains("pingora_core=debug"), "{f}");
        let f = log_filter("trace,pingora_core=trace").unwrap();
        assert!(
            !f.contains("pingora_core=debug") && f.contains("pingora_proxy=debug"),
            "{f}"
        );
        let f = log_filter("trace,pingora_core::listeners=info").unwrap();
        assert!(
            f.contains("pingora_core=debug"),
            "a module's directive keeps the library's cap: {f}"
        );
        assert_eq!(log_filter("debug").unwrap(), "debug");
    }
}
