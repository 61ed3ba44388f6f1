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

/// Benign values that are not in the corpus: prose, punctuation, identifiers and markup the
/// city app's users and front ends send. Each goes in a query parameter and a JSON field.
const BENIGN_VALUES: &[&str] = &[
    "Select your district and choose a time slot",
    "I can't log in; please help me reset my password",
    "What's the status? (ref #20240601-0012)",
    "Where can I get a union membership card?",
    "Please delete my account and all data from your system",
    "Update the form, then drop it off at the service hall",
    "from 9:00 to 17:00, Mon-Fri",
    "O'Neil & Sons Ltd.",
    "rock 'n' roll",
    "He said \"hi\" -- then left",
    "It's 5' 10\" tall",
    "e.g. a/b/c or x/y",
    "A&B; C&D",
    "Order by phone: 021-12345678",
    "1 or 2 people",
    "select * from the menu, please",
    "drop table tennis lessons",
    "insert coin to continue",
    "Is 3 > 2 and 1 < 2? yes",
    "50%-70% off, see details",
    "<3 thanks!",
    "C# and .NET developer",
    "user@example.com",
    "+86 138 0013 8000",
    "11010519491231002X",
    "浙江省杭州市西湖区文三路478号 (华星时代广场) A座-1001",
    "请问社保卡补办需要哪些材料？谢谢！",
    "我想预约“不动产登记”业务；时间：周三上午",
    "《关于做好2024年度个人所得税汇算的公告》第3条",
    "¥1,299.00（含税）",
    "wx1c218e7c60c31932",
    "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyLTEiLCJhdWQiOiJmZW5mYSJ9.ZmFrZS1zaWduYXR1cmUtYnl0ZXMtaGVyZQ",
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA/+abc==",
    "https://www.example.gov.cn/service/detail?id=123&from=search#top",
    "pages/index/index?scene=qr&code=0a1B2c",
    "/pages/service/detail",
    "2024-06-01T08:30:00.000Z",
    "status:paid|shipped",
    "sort=-created_at,name",
    "{\"a\":1}",
    "<p><strong>通知</strong>：<span style=\"color: rgb(51, 51, 51); font-size: 14px;\">请携带身份证</span></p>",
    "<p style=\"text-align: center;\"><img src=\"https://cdn.example.gov.cn/u/2024/a.jpg\" alt=\"\" width=\"600\" height=\"400\" style=\"max-width:100%\"></p>",
    "<ol><li>第一步</li><li>第二步</li></ol><hr><br><blockquote>引用</blockquote>",
    "<table border=\"1\" cellpadding=\"4\"><tbody><tr><th>项目</th><td>金额</td></tr></tbody></table>",
    "<a href=\"https://www.example.gov.cn/a.pdf\" target=\"_blank\" rel=\"noopener noreferrer\">下载附件</a>",
    "<h2>办事指南</h2><p><em>注意</em>：<u>原件</u>与<s>复印件</s></p><pre><code>A-1</code></pre>",
    "<!--StartFragment--><p>粘贴的内容</p><!--EndFragment-->",
    "<p><img src=\"data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgH\"></p>",
    "Dear Sir/Madam, I would like to update my address.",
    "cat & dog friendly park?",
    "my.name-is_ok",
    "id",
    "type",
    "echo",
    "Q&A",
    "AT&T",
    "1;2;3",
    "a|b|c",
    "nickname: \"小明\"",
    "9 o'clock",
    "100/2 = 50",
    "x=1, y=2",
    "[1, 2, 3]",
    "It costs $5 (about ¥36)",
    "<p><br></p>",
    "<p style=\"text-align: justify; text-indent: 2em;\"><span style=\"font-family: 宋体, SimSun; font-size: 16px; color: rgb(0, 0, 0);\">为进一步优化营商环境，现将有关事项通知如下：</span></p>",
    "<font color=\"#ff0000\" face=\"微软雅黑\">重要提示</font>",
    "<table style=\"width: 100%; border-collapse: collapse;\" border=\"1\"><colgroup><col style=\"width: 50%;\"></colgroup><tbody><tr><td>事项</td></tr></tbody></table>",
    "<p><img class=\"wscnph\" src=\"https://cdn.example.gov.cn/u/a.png\" data-ratio=\"0.75\" data-w=\"1080\" /></p>",
    "<pre><code class=\"language-js\">const a = 1;</code></pre>",
    "<section style=\"margin: 0px; padding: 0px;\"><p>微信公众号文章</p></section>",
    "<p><a href=\"https://mp.weixin.qq.com/s/abc\" target=\"_blank\" rel=\"noopener noreferrer\" data-linktype=\"2\">阅读原文</a></p>",
    "<video controls=\"controls\" width=\"100%\" src=\"https://cdn.example.gov.cn/v/a.mp4\"></video>",
    "<p>2 &lt; 3 且 5 &gt; 4，A&amp;B 公司&nbsp;地址</p>",
    "<p class=\"ql-align-center\"><strong class=\"ql-size-large\">居中</strong></p>",
    "query { user(id: 1) { name avatar } }",
    "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx1&redirect_uri=https%3A%2F%2Fh5.city.gov.cn%2Fcb&response_type=code&scope=snsapi_base&state=STATE#wechat_redirect",
    "C:\\Users\\张三\\Desktop\\申请表.docx",
    "ping me later; echo chamber; find my phone",
    "${price} {{name}} #{id} %s 100%",
    "1号楼#302室",
    "he said \"yes\" and left; it's \"great\" -- really",
    "20% OFF AND FREE SHIPPING, buy 1 get 1 free & save 10%",
    "Mary's & John's \"Union\" Square",
    "he's 6'2\", size: 10\" x 12\"",
    "1=1 的含义, select * 是什么意思, union select 是什么, drop table 怎么写",
    "a--b and/or path/to/file, A+B 套餐",
];

#[test]
fn benign_values_outside_the_corpus_pass() {
    let waf = Waf::from_config(&serde_json::json!({})).unwrap();
    let headers = http::HeaderMap::new();
    let mut failures = Vec::new();
    for v in BENIGN_VALUES {
        let q = format!("v={}", enc(v));
        let view = RequestView {
            method: &http::Method::GET,
            path: "/api/v1/x",
            query: Some(&q),
            headers: &headers,
            client_ip: [127, 0, 0, 1].into(),
            tls: false,
        };
        let head = waf.inspect_head(&view);
        let body = serde_json::json!({ "v": v }).to_string();
        let json = waf.inspect_body(&BodyKind::Json, body.as_bytes());
        if !head.is_empty() || !json.is_empty() {
            failures.push(format!("{v:?}: {head:?} {json:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
