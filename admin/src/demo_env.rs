//! `<data-dir>/demo.env`: what `serve --demo` prints, as shell variables, so the walk-through in
//! `docs/admin.md` (and `docs/walkthrough.sh`) can be pasted as it is: `. …/demo.env`.
//!
//! The initial accounts' passwords and TOTP secrets are known only at the first start; they are
//! kept from the existing file on later starts, while the addresses and the demo client token
//! (fresh at every start) are rewritten. The file is mode 0600 — it holds credentials — and is
//! written only with `--demo`. This module may not print or log what it writes.

use std::path::Path;

use crate::auth::Issued;
use crate::model::Role;

/// Where the demo's variables go.
pub fn path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("demo.env")
}

/// `'…'` for a POSIX shell.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// The variable prefix of an initial account's role.
fn prefix(role: Role) -> Option<&'static str> {
    match role {
        Role::SystemAdmin => Some("ADMIN"),
        Role::SecurityAdmin => Some("SEC"),
        Role::AuditAdmin => Some("AUDIT"),
        Role::AgencyOperator => None,
    }
}

/// What the demo's variables are this start.
pub struct DemoEnv<'a> {
    pub issued: &'a [Issued],
    pub control_plane: String,
    pub gateway: String,
    pub echo_host: String,
    pub echo_port: u16,
    pub token: String,
}

/// Writes (or refreshes) the file.
pub fn write(file: &Path, d: &DemoEnv<'_>) -> std::io::Result<()> {
    let mut lines: Vec<String> = vec![
        "# fenfa-admin serve --demo: the walk-through's variables (docs/admin.md). Mode 0600."
            .into(),
    ];
    let mut creds: Vec<String> = Vec::new();
    for i in d.issued {
        let Some(p) = prefix(i.role) else { continue };
        if let Some(pw) = &i.password {
            creds.push(format!("{p}_PW={}", quote(pw)));
        }
        if let Some(s) = &i.totp_secret {
            creds.push(format!("{p}_TOTP={}", quote(s)));
        }
    }
    if creds.is_empty() {
        // Not a first start: keep the credentials written then.
        if let Ok(old) = std::fs::read_to_string(file) {
            creds = old
                .lines()
                .filter(|l| {
                    ["ADMIN_", "SEC_", "AUDIT_"]
                        .iter()
                        .any(|p| l.starts_with(p))
                })
                .map(str::to_string)
                .collect();
        }
    }
    lines.extend(creds);
    lines.push(format!("CP={}", quote(&d.control_plane)));
    lines.push(format!("GW={}", quote(&d.gateway)));
    lines.push(format!("ECHO_HOST={}", quote(&d.echo_host)));
    lines.push(format!("ECHO_PORT={}", d.echo_port));
    lines.push(format!("DEMO_TOKEN={}", quote(&d.token)));
    let mut text = lines.join("\n");
    text.push('\n');
    crate::crypto::write_private(file, text.as_bytes())
}
