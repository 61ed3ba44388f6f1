//! Replays the WAF development corpus (`tests/data/waf-dev.jsonl.gz`, see its README) through
//! the `waf` plugin's detection at paranoia 1 and checks the targets: at least 95% of the SQLi,
//! XSS, path traversal and command injection requests detected, at most 0.5% of the benign ones.
//! Prints the rate per class; `WAF_CORPUS_VERBOSE=1` also lists what was missed or wrongly
//! blocked.

use std::collections::BTreeMap;
use std::io::Read;

use fenfa_plugins::waf::body::BodyKind;
use fenfa_plugins::waf::{Detection, Waf};
use fenfa_plugins::RequestView;
use serde_json::Value;

fn corpus() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/waf-dev.jsonl.gz"
    );
    let file = std::fs::File::open(path).expect("corpus file");
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("gzip");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// What the plugin finds in one corpus request (head first, then body, as the gateway runs it).
fn inspect(waf: &Waf, r: &Value) -> Vec<Detection> {
    let mut headers = http::HeaderMap::new();
    if let Some(h) = r["headers"].as_object() {
        for (k, v) in h {
            if let (Ok(name), Some(Ok(value))) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(http::HeaderValue::from_str),
            ) {
                headers.append(name, value);
            }
        }
    }
    let query = r["query"].as_str().filter(|q| !q.is_empty());
    let method: http::Method = r["method"].as_str().unwrap_or("GET").parse().unwrap();
    let view = RequestView {
        method: &method,
        path: r["path"].as_str().unwrap_or("/"),
        query,
        headers: &headers,
        client_ip: [127, 0, 0, 1].into(),
        tls: false,
    };
    let found = waf.inspect_head(&view);
    if !found.is_empty() {
        return found;
    }
    let body = r["body"].as_str().unwrap_or("");
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    waf.inspect_body(&BodyKind::from_content_type(ct), body.as_bytes())
}

#[test]
fn dev_corpus_detection_and_false_positive_rates() {
    let verbose = std::env::var_os("WAF_CORPUS_VERBOSE").is_some();
    let waf = Waf::from_config(&serde_json::json!({})).unwrap();
    // class -> (total, blocked)
    let mut stats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in corpus() {
        let class = r["class"].as_str().unwrap_or("?").to_owned();
        let found = inspect(&waf, &r);
        let e = stats.entry(class.clone()).or_default();
        e.0 += 1;
        if !found.is_empty() {
            e.1 += 1;
        }
        if verbose {
            let attack = r["expect"] == "block";
            if attack && found.is_empty() {
                eprintln!("MISS {class} {}: {}", r["placement"], r["meta"]["payload"]);
            } else if !attack && !found.is_empty() {
                eprintln!("FP {found:?}: {} {} {}", r["path"], r["query"], r["body"]);
            }
        }
    }
    println!("waf dev corpus, paranoia 1:");
    for (class, (total, blocked)) in &stats {
        println!(
            "  {class:<18} {blocked:>5}/{total:<5} blocked = {:6.2}%",
            100.0 * *blocked as f64 / *total as f64
        );
    }
    for class in ["sqli", "xss", "path_traversal", "command_injection"] {
        let (total, blocked) = stats[class];
        assert!(
            blocked * 100 >= total * 95,
            "{class}: only {blocked} of {total} detected"
        );
    }
    let (total, blocked) = stats["benign"];
    assert!(
        blocked * 1000 <= total * 5,
        "benign: {blocked} of {total} blocked (more than 0.5%)"
    );
}
