//! Shipped configs stay valid: every `examples/*.yaml`, and every complete config in the docs.
//!
//! A doc example counts as a complete config when its ```` ```yaml ```` fence opens with the line
//! `# fenfa-config`; those are fed to `fenfa-gateway check` exactly like the example files, so a
//! change to the config model that breaks them fails here instead of misleading a reader.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The marker that makes a fenced `yaml` block in the docs a checked, complete config.
const MARKER: &str = "# fenfa-config";

/// Pages whose complete configs are checked.
const CHECKED_DOCS: [&str; 10] = [
    "config.md",
    "metrics.md",
    "routing.md",
    "upstreams.md",
    "plugins/response-masking.md",
    "plugins/waf.md",
    "plugins/rate-limit.md",
    "plugins/jwt-auth.md",
    "tracing.md",
    "h5.md",
];

fn repo_dir(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(name)
}

/// Runs `fenfa-gateway check --config <file>`; `Err` carries everything it printed.
fn check(file: &Path) -> Result<String, String> {
    let data = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
        .arg("check")
        .arg("--config")
        .arg(file)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("run fenfa-gateway check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The ```` ```yaml ```` blocks of `markdown` whose first line is [`MARKER`], with the line
/// number (1-based) of the opening fence.
fn marked_yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        match &mut open {
            None if trimmed == "```yaml" || trimmed == "```yml" => {
                open = Some((i + 1, String::new()))
            }
            None => {}
            Some(_) if trimmed.starts_with("```") => {
                if let Some((at, body)) = open.take() {
                    if body.lines().next().map(str::trim) == Some(MARKER) {
                        blocks.push((at, body));
                    }
                }
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn every_example_config_passes_check() {
    let dir = repo_dir("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    for required in ["basic.yaml", "multi-agency.yaml", "demo.yaml"] {
        assert!(
            files.iter().any(|f| f.ends_with(required)),
            "examples/{required} is missing; found {files:?}"
        );
    }
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| check(f).err().map(|e| format!("{}:\n{e}", f.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "example configs fail `fenfa-gateway check`:\n{}",
        failures.join("\n")
    );
}

#[test]
fn complete_configs_in_the_docs_pass_check() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for page in CHECKED_DOCS {
        let path = repo_dir("docs").join(page);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let blocks = marked_yaml_blocks(&text);
        assert!(
            !blocks.is_empty(),
            "docs/{page} has no ```yaml block starting with `{MARKER}`"
        );
        for (line, body) in blocks {
            let file = tmp.path().join(format!(
                "{}-{line}.yaml",
                page.trim_end_matches(".md").replace('/', "-")
            ));
            std::fs::write(&file, &body).expect("write doc example");
            if let Err(e) = check(&file) {
                failures.push(format!("docs/{page}, block at line {line}:\n{e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "complete configs in the docs fail `fenfa-gateway check`:\n{}",
        failures.join("\n")
    );
}

#[test]
fn only_marked_yaml_blocks_are_extracted() {
    let md = "text\n```yaml\n# fenfa-config\nversion: a\n```\n\n```yaml\nroutes: []\n```\n\
              ```sh\n# fenfa-config\n```\n  ```yaml\n  # fenfa-config\n  version: b\n  ```\n";
    let blocks = marked_yaml_blocks(md);
    assert_eq!(
        blocks,
        vec![
            (2, "# fenfa-config\nversion: a\n".to_string()),
            (13, "  # fenfa-config\n  version: b\n".to_string()),
        ]
    );
}
