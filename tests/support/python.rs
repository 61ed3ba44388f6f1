//! Independent implementations in Python, run as `python3` at test time: the standard library's
//! `hmac`/`hashlib`, and HMAC-SM3 over `gmssl`'s SM3 (`pip install gmssl`), written out as RFC
//! 2104 says, so nothing of Fenfa's (or of RustCrypto's) checks Fenfa.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Defines `sm3(bytes)` and `hmac_sm3(key, msg)` for a script (see [`run`]).
pub const HMAC_SM3: &str = r#"
from gmssl import sm3 as _sm3, func as _func
def sm3(b): return bytes.fromhex(_sm3.sm3_hash(_func.bytes_to_list(b)))
def hmac_sm3(key, msg):
    key = (sm3(key) if len(key) > 64 else key).ljust(64, b"\0")
    return sm3(bytes(k ^ 0x5C for k in key) + sm3(bytes(k ^ 0x36 for k in key) + msg))
"#;

/// Runs `script` (after [`HMAC_SM3`]'s definitions) with `args` as `sys.argv[1:]` and `stdin`
/// on its standard input; its standard output, trimmed. Panics with Python's error.
pub fn run(script: &str, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!("{HMAC_SM3}\n{script}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 (with gmssl: pip install gmssl) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
