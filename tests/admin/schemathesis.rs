//! schemathesis (PyPI) against the running control plane's `/openapi.json`: every operation,
//! with generated valid and invalid input, must answer as the document says — declared statuses
//! and content types, response bodies matching their schemas, invalid input refused, and never a
//! 5xx. The document is generated from the handlers' types, so this checks both at once.
//!
//! Needs the `st` command (`pip install schemathesis==4.32.5`; `.ci/run` installs it). Outside CI
//! a missing `st` skips the test loudly; with `CI` set it fails.

use std::process::Command;

use serde_json::json;

use crate::harness::*;

/// `st`, if installed.
fn schemathesis() -> Option<String> {
    let ok = Command::new("st")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("st".into());
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but schemathesis (`st`) is not installed: pip install schemathesis==4.32.5"
        );
    }
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        b"\n!!! SKIPPING the schemathesis run: `st` is not installed (pip install schemathesis==4.32.5; CI installs it)\n\n",
    );
    None
}

/// Runs `st run` with `extra` arguments; returns (success, output).
fn run(st: &str, env: &Env, token: &str, extra: &[&str]) -> (bool, String) {
    let work = tempfile::tempdir().expect("a directory for schemathesis");
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/admin/schemathesis.toml"
    );
    let out = Command::new(st)
        .args(["--config-file", config, "run"])
        .arg(format!("{}/openapi.json", env.base))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", "15", "--workers", "2", "--no-color"])
        .args(["--request-timeout", "30", "--generation-database", "none"])
        .args(extra)
        // Its caches and reports go to a directory of its own, never into the checkout.
        .current_dir(work.path())
        .output()
        .expect("run st");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_and_no_5xx_in_any_operation() {
    let Some(st) = schemathesis() else { return };
    // A 5xx is logged with its cause by the control plane; show it with the failure.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("fenfa_admin=error")
        .try_init();
    let env = Env::start(Backend::Sqlite).await.expect("sqlite env");
    // Some data, so that not every operation answers 404.
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "social").await;
    env.policy(&sec, &ag, "social-backends").await;
    let svc = env.service(&sys, &ag, "pension").await;
    env.route(&sys, &svc, "pension-balance", "/social/pension/balance")
        .await;
    env.expect(
        201,
        "POST",
        "/v1/apps",
        &sys,
        json!({"channel": "wechat", "app_id": "wx-a", "name": "app"}),
    )
    .await;

    // First the operations only the security and the audit admin may call, with their sessions,
    // so that their inputs are exercised beyond the 403 a system admin gets (before the system
    // admin's run, which may reset or disable their accounts).
    let auditor = env.auditor().await;
    for (who, token, tags) in [
        (
            "security-admin",
            &sec,
            &["keys", "network-policies", "limits", "settings", "nodes"][..],
        ),
        ("audit-admin", &auditor, &["audit"][..]),
    ] {
        let mut args: Vec<&str> = Vec::new();
        for t in tags {
            args.extend(["--include-tag", t]);
        }
        let (ok, out) = tokio::task::block_in_place(|| run(&st, &env, token, &args));
        assert!(ok, "schemathesis found failures as {who}:\n{out}");
    }
    let st_owned = st.clone();
    let (ok, out) = {
        let env = &env;
        let sys = sys.clone();
        tokio::task::block_in_place(move || {
            run(
                &st_owned,
                env,
                &sys,
                &["--exclude-operation-id", "post_v1_auth_logout"],
            )
        })
    };
    assert!(ok, "schemathesis found failures:\n{out}");
    // Every operation schemathesis loaded from the document but sign-out was selected and tested.
    let total: usize = out
        .split("Selected: ")
        .nth(1)
        .and_then(|r| r.split(['/', '\n']).nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        total > 60
            && out.contains(&format!("Selected: {}/{total}\n", total - 1))
            && out.contains(&format!("Tested: {}\n", total - 1)),
        "every operation but sign-out was tested:\n{out}"
    );
    // Signing out last, so that the session stays valid for everything else.
    let (ok, out) = tokio::task::block_in_place(|| {
        run(
            &st,
            &env,
            &sys,
            &["--include-operation-id", "post_v1_auth_logout"],
        )
    });
    assert!(ok, "schemathesis found failures in sign-out:\n{out}");
    env.finish().await;
}
