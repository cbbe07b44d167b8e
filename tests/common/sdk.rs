//! The official Python SDKs as clients: a virtual environment under `target/sdk-venv` with the pinned
//! versions of `tests/sdk/requirements.txt`, created on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, creating the venv when needed. Without python3 the SDK tests cannot run: in
/// CI that is a failure, locally a loud skip.
pub fn python() -> Option<PathBuf> {
    let mut guard = VENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return Some(p.clone());
    }
    let venv = root().join("target/sdk-venv");
    let py = venv.join("bin/python");
    let reqs = root().join("tests/sdk/requirements.txt");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&reqs).expect("requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let host = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        match Command::new(&host).args(["-m", "venv"]).arg(&venv).status() {
            Ok(s) if s.success() => {}
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "python3 -m venv failed in CI: {other:?}"
                );
                eprintln!("SKIPPED: SDK tests need python3 with venv ({other:?})");
                return None;
            }
        }
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&reqs)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Offline, or PyPI unreachable: CI must have the SDKs; elsewhere the SDK tests skip.
            assert!(std::env::var_os("CI").is_none(), "pip install of the SDKs failed in CI");
            eprintln!("SKIPPED: SDK tests need the SDKs from PyPI (pip install failed)");
            return None;
        }
        std::fs::write(&stamp, wanted).expect("stamp");
    }
    *guard = Some(py.clone());
    Some(py)
}

/// Runs `tests/sdk/<script>` with `args` and parses the JSON it prints.
pub fn run(script: &str, args: &[&str]) -> Option<Value> {
    let py = python()?;
    let out = Command::new(py)
        .arg(root().join("tests/sdk").join(script))
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script} printed {stdout}: {e}")))
}

/// [`run`] off the async runtime (the SDKs block): `None` when python is missing (a loud skip).
pub async fn run_async(script: &str, args: &[&str]) -> Option<Value> {
    let script = script.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&script, &args)
    })
    .await
    .unwrap()
}
