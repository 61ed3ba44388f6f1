//! Cost of the `waf` plugin per request: the request head of an ordinary mini-program call
//! (path, query with a WeChat signature, a WeChat `User-Agent`, a cookie), the same with an
//! attack in the query, and a 1 KiB JSON body of Chinese text and rich-text HTML.
//!
//! Run: `cargo bench -p fenfa-benches --bench waf -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fenfa_plugins::waf::body::BodyKind;
use fenfa_plugins::waf::Waf;
use fenfa_plugins::RequestView;
use http::{HeaderMap, HeaderValue, Method};

const UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 \
(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";
const QUERY: &str = "appid=wx1c218e7c60c31932&timestamp=1722165351&nonce=pPB2fd2MRj6UKAtM\
&sign=F7452E3DDC00BDA24B20032627B76272&keyword=%E7%94%B5%E5%8A%A8%E8%BD%A6%E4%B8%8A%E7%89%8C&page=2";
const ATTACK: &str = "id=1%27%20UNION%20SELECT%20username%2C%20password%20FROM%20users--&page=2";

fn head(c: &mut Criterion) {
    let waf = Waf::from_config(&serde_json::json!({})).expect("config");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static(UA));
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_static(
            "session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2ln; lang=zh-CN",
        ),
    );
    let mut g = c.benchmark_group("waf_head");
    for (name, query) in [("benign", QUERY), ("attack", ATTACK)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = RequestView {
                    method: &Method::GET,
                    path: "/api/v1/policy/search",
                    query: Some(query),
                    headers: &headers,
                    client_ip: [127, 0, 0, 1].into(),
                    tls: false,
                };
                black_box(waf.inspect_head(&req).len())
            })
        });
    }
    g.finish();
}

fn body(c: &mut Criterion) {
    let waf = Waf::from_config(&serde_json::json!({})).expect("config");
    let doc = serde_json::json!({
        "name": "黄丽", "idCard": "320106197810164745", "mobile": "15007851086",
        "address": "江苏省南京市鼓楼区中山北路30号(近鼓楼地铁站)",
        "remark": "请问社保卡补办需要哪些材料？O'Brien 代办，select a time slot",
        "content": "<p><strong>各位市民：</strong></p><p style=\"text-align:center\"><img src=\"https://cdn.example.gov.cn/a.png\" width=\"300\"></p><ul><li>第一条</li><li>第二条</li></ul><p><a href=\"https://www.example.gov.cn/\" target=\"_blank\">详情</a></p>",
        "items": [{"sku": "SKU-1380", "qty": 3, "price": 412.95}, {"sku": "SKU-2687", "qty": 1, "price": 9.5}],
        "callback": "https://miniapp.example.gov.cn/pay/notify?from=wx&id=655699"
    })
    .to_string();
    c.bench_function("waf_body_json_1k", |b| {
        b.iter(|| black_box(waf.inspect_body(&BodyKind::Json, doc.as_bytes()).len()))
    });
}

criterion_group!(benches, head, body);
criterion_main!(benches);
