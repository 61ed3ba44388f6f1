//! The control plane's dependency surface: `fenfa-admin` (the library with the control plane)
//! links no proxy. The `fenfa-admin` binary (package `fenfa-platform`) adds the gateway for the
//! single-node `serve`.

use std::process::Command;

#[test]
fn the_control_plane_crate_does_not_link_pingora() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tree = |package: &str| {
        let out = Command::new(&cargo)
            .current_dir(&workspace)
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                package,
            ])
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree -p {package}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let admin = tree("fenfa-admin");
    assert!(admin.contains("fenfa-config"), "{admin}");
    let linked: Vec<&str> = admin.lines().filter(|l| l.starts_with("pingora")).collect();
    assert!(linked.is_empty(), "fenfa-admin links {linked:?}");
    // The check would pass vacuously if `cargo tree` printed nothing useful: the gateway does
    // link pingora.
    assert!(tree("fenfa-gateway")
        .lines()
        .any(|l| l.starts_with("pingora")));
}
