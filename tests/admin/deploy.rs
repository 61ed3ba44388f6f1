//! The systemd units of `deploy/systemd/` (quoted in `docs/cluster.md`): `systemd-analyze verify`
//! accepts them, `systemd-analyze security --offline` rates their exposure at most 2.0 ("OK"),
//! the real binaries accept their command lines, and the doc quotes them as they are.
//!
//! `verify` checks that each `ExecStart` binary exists and is executable, so the test verifies a
//! copy of each unit whose `/usr/local/bin/<name>` is this build's binary (the only change).
//! Needs `systemd-analyze` (Debian package `systemd`; `.ci/run` installs it). Outside CI a missing
//! tool skips the systemd part loudly; with `CI` set it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::serve::gateway_bin;

/// Highest `systemd-analyze security` exposure allowed, ×10 (its `--threshold` scale).
const MAX_EXPOSURE: &str = "20";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(rel)
}

fn read(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The units, with the binary each one starts.
fn units() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("fenfa-gateway.service", gateway_bin()),
        (
            "fenfa-admin.service",
            PathBuf::from(env!("CARGO_BIN_EXE_fenfa-admin")),
        ),
    ]
}

/// The words of the unit's only `ExecStart=` (continuation lines joined).
fn exec_start(unit: &str, text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let starts: Vec<&str> = joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "{unit}: exactly one ExecStart=, got {starts:?}"
    );
    starts[0].split_whitespace().map(str::to_string).collect()
}

/// `systemd-analyze`, if installed.
fn systemd_analyze() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but systemd-analyze is not installed: apt-get install systemd");
    }
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        b"\n!!! SKIPPING the systemd unit checks: systemd-analyze is not installed (apt-get install systemd; CI installs it)\n\n",
    );
    false
}

/// Runs `systemd-analyze` with `args`; (success, stdout and stderr).
fn analyze(args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(file)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_units_pass_verify_and_the_security_review() {
    if !systemd_analyze() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    for (unit, bin) in units() {
        let text = read(&format!("deploy/systemd/{unit}"));
        let installed = format!("/usr/local/bin/{}", unit.trim_end_matches(".service"));
        assert_eq!(
            exec_start(unit, &text)[0],
            installed,
            "{unit}: ExecStart runs the installed binary"
        );
        assert!(bin.is_file(), "{} is not built", bin.display());
        let copy = tmp.path().join(unit);
        let bin = bin.to_str().expect("a UTF-8 path");
        std::fs::write(&copy, text.replace(&installed, bin)).expect("write the unit's copy");

        let (ok, out) = analyze(&["verify", "--man=no"], &copy);
        // Warnings (an unknown or misspelt setting, a bad value) do not fail `verify`; any line
        // about this unit does fail the test. Lines about the host's own units are not ours.
        let ours: Vec<&str> = out.lines().filter(|l| l.contains(unit)).collect();
        assert!(
            ok && ours.is_empty(),
            "systemd-analyze verify {unit}: {}\n{out}",
            if ok { "warnings" } else { "failed" }
        );

        let threshold = format!("--threshold={MAX_EXPOSURE}");
        let (ok, out) = analyze(&["security", "--offline=yes", &threshold], &copy);
        assert!(
            ok,
            "{unit}: exposure above {MAX_EXPOSURE}/10 by systemd-analyze security:\n{out}"
        );
    }
}

/// Each binary accepts its unit's flags: the command line with `--help` appended, which clap
/// answers only after every flag before it was recognised.
#[test]
fn the_units_command_lines_are_accepted_by_the_binaries() {
    for (unit, bin) in units() {
        let text = read(&format!("deploy/systemd/{unit}"));
        let argv = exec_start(unit, &text);
        let out = Command::new(&bin)
            .args(&argv[1..])
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && all.contains("Usage:"),
            "{unit}: `{}` refused: {all}",
            argv.join(" ")
        );
    }
}

/// `docs/cluster.md` quotes every file of `deploy/systemd/` whole, so the page and the files
/// cannot drift apart.
#[test]
fn the_cluster_doc_quotes_the_units_as_they_are() {
    let doc = read("docs/cluster.md");
    let dir = repo_file("deploy/systemd");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    for name in names {
        let text = read(&format!("deploy/systemd/{name}"));
        let fenced = format!("\n```ini\n{text}```\n");
        assert!(
            doc.contains(&fenced),
            "docs/cluster.md does not quote deploy/systemd/{name} whole (in an ```ini block); edit them together"
        );
    }
}
