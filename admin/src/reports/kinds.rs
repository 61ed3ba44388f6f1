//! The four reports, each built from the stored records of its period into a [`Doc`].

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;

use super::doc::{num, Chart, Doc, Section};
use crate::app::App;
use crate::error::ApiResult;
use crate::local_time::display;
use crate::traffic::{self, Agg};

/// Report kinds: `(kind, title)`.
pub const KINDS: [(&str, &str); 4] = [
    ("daily-inspection", "每日巡检报告"),
    ("weekly-status", "系统运行状态监控分析报告"),
    ("go-live-records", "服务上线记录表"),
    ("security-monthly", "安全监测月报"),
];

pub fn title(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, t)| *t)
        .unwrap_or("报告")
}

fn period(from: i64, to: i64) -> String {
    if from <= 0 {
        return format!("截至 {} (北京时间)", display(to));
    }
    format!("{} 至 {} (北京时间)", display(from), display(to))
}

fn doc(kind: &str, from: i64, to: i64, now: i64) -> Doc {
    Doc {
        kind: kind.to_string(),
        title: title(kind).to_string(),
        period: period(from, to),
        generated_at: format!("{} (北京时间)", display(now)),
        summary: Vec::new(),
        sections: Vec::new(),
    }
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

pub async fn build(app: &App, kind: &str, from: i64, to: i64, now: i64) -> ApiResult<Doc> {
    match kind {
        "daily-inspection" => daily_inspection(app, from, to, now).await,
        "weekly-status" => weekly_status(app, from, to, now).await,
        "go-live-records" => go_live(app, from, to, now).await,
        _ => security_monthly(app, from, to, now).await,
    }
}

async fn daily_inspection(app: &App, from: i64, to: i64, now: i64) -> ApiResult<Doc> {
    let mut d = doc("daily-inspection", from, to, now);
    let runs = crate::inspection::stored(&app.store.pool, from, to, 1000).await?;
    let mut rows = Vec::new();
    let mut services = std::collections::BTreeSet::new();
    let mut probes = 0u64;
    let mut failed = 0u64;
    for r in &runs {
        let at = r["started_at"].as_str().unwrap_or("");
        let at = at
            .parse::<jiff::Timestamp>()
            .map(|t| display(t.as_second()))
            .unwrap_or_default();
        for s in r["services"].as_array().into_iter().flatten() {
            services.insert(s["service"].as_str().unwrap_or("").to_string());
            for i in s["interfaces"].as_array().into_iter().flatten() {
                for p in i["probes"].as_array().into_iter().flatten() {
                    probes += 1;
                    let causes: Vec<String> = p["causes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|c| {
                            crate::inspection::probe::Cause::parse(c)
                                .map(|c| c.label_zh().to_string())
                                .unwrap_or_else(|| c.to_string())
                        })
                        .collect();
                    if !causes.is_empty() {
                        failed += 1;
                    }
                    rows.push(vec![
                        at.clone(),
                        s["service"].as_str().unwrap_or("").to_string(),
                        s["title"].as_str().unwrap_or("").to_string(),
                        i["route"].as_str().unwrap_or("").to_string(),
                        p["target"].as_str().unwrap_or("").to_string(),
                        p["status"]
                            .as_u64()
                            .map(|x| x.to_string())
                            .unwrap_or_default(),
                        p["latency_ms"]
                            .as_u64()
                            .map(|x| x.to_string())
                            .unwrap_or_default(),
                        p["cert_days_left"]
                            .as_i64()
                            .map(|x| x.to_string())
                            .unwrap_or_default(),
                        if causes.is_empty() {
                            "正常".into()
                        } else {
                            causes.join("；")
                        },
                    ]);
                }
            }
        }
    }
    let pool = &app.store.pool;
    use crate::inspection::faults::{list, FaultRow};
    use crate::store::Bind;
    let opened: Vec<FaultRow> = list(
        pool,
        &[
            ("opened_at >= ?", Bind::Int(from)),
            ("opened_at < ?", Bind::Int(to)),
        ],
        10_000,
    )
    .await?;
    let closed: Vec<FaultRow> = list(
        pool,
        &[
            ("closed_at >= ?", Bind::Int(from)),
            ("closed_at < ?", Bind::Int(to)),
        ],
        10_000,
    )
    .await?;
    let still_open = list(pool, &[("state = ?", Bind::Text("open".into()))], 10_000).await?;
    let cause = |c: &str| {
        crate::inspection::probe::Cause::parse(c)
            .map(|c| c.label_zh().to_string())
            .unwrap_or_else(|| c.to_string())
    };
    d.summary = vec![
        kv("巡检次数", runs.len()),
        kv("巡检服务数", services.len()),
        kv("探测次数", probes),
        kv("异常探测次数", failed),
        kv("新增故障数", opened.len()),
        kv("关闭故障数", closed.len()),
        kv("当前未关闭故障数", still_open.len()),
    ];
    d.sections.push(Section {
        title: "巡检结果".into(),
        columns: [
            "巡检时间",
            "服务标识",
            "服务名称",
            "接口",
            "目标地址",
            "状态码",
            "耗时(毫秒)",
            "证书剩余天数",
            "结果",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        chart: None,
    });
    let mut by_cause: BTreeMap<String, u64> = BTreeMap::new();
    for f in &opened {
        *by_cause.entry(cause(&f.cause)).or_default() += 1;
    }
    d.sections.push(Section {
        title: "新增故障按原因统计".into(),
        columns: vec!["故障原因".into(), "数量".into()],
        rows: by_cause
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect(),
        chart: Some(Chart {
            title: "新增故障数（按原因）".into(),
            label_column: 0,
            value_column: 1,
            target: None,
        }),
    });
    let fault_row = |f: &FaultRow| {
        vec![
            f.id.clone(),
            f.service.clone(),
            f.route.clone().unwrap_or_default(),
            f.target.clone().unwrap_or_default(),
            cause(&f.cause),
            display(f.opened_at),
            f.closed_at.map(display).unwrap_or_default(),
            f.closed_by.clone().unwrap_or_default(),
            f.note.clone().unwrap_or_else(|| f.detail.clone()),
        ]
    };
    let fault_cols: Vec<String> = [
        "故障编号",
        "服务",
        "接口",
        "目标地址",
        "故障原因",
        "发现时间",
        "关闭时间",
        "关闭人",
        "说明",
    ]
    .map(String::from)
    .to_vec();
    d.sections.push(Section {
        title: "新增故障".into(),
        columns: fault_cols.clone(),
        rows: opened.iter().map(fault_row).collect(),
        chart: None,
    });
    d.sections.push(Section {
        title: "关闭故障".into(),
        columns: fault_cols,
        rows: closed.iter().map(fault_row).collect(),
        chart: None,
    });
    Ok(d)
}

fn channel_zh(c: &str) -> String {
    match c {
        "wechat" => "微信".into(),
        "alipay" => "支付宝".into(),
        "baidu" => "百度".into(),
        "" => "未标识".into(),
        x => x.to_string(),
    }
}

async fn weekly_status(app: &App, from: i64, to: i64, now: i64) -> ApiResult<Doc> {
    let mut d = doc("weekly-status", from, to, now);
    let mut all = Agg::default();
    let mut by_day = BTreeMap::new();
    let mut by_channel = BTreeMap::new();
    let mut by_service = BTreeMap::new();
    let mut by_route = BTreeMap::new();
    traffic::scan(&app.store.pool, from, to, |r| {
        all.add(r);
        traffic::add_to(&mut by_day, crate::local_time::day(r.at), r);
        traffic::add_to(&mut by_channel, r.channel.clone(), r);
        traffic::add_to(&mut by_service, r.service.clone(), r);
        traffic::add_to(&mut by_route, (r.service.clone(), r.route.clone()), r);
    })
    .await?;
    let sys = all.summary();
    let target = 99.0;
    d.summary = vec![
        kv("请求总数", sys.requests),
        kv("错误数(5xx)", sys.errors),
        kv("错误率(%)", num(sys.error_rate)),
        kv("系统可用率(%)", num(sys.availability)),
        kv("可用率目标(%)", num(target)),
        kv(
            "是否达标",
            if sys.availability >= target {
                "达标"
            } else {
                "未达标"
            },
        ),
        kv("P50 延迟(毫秒)", num(sys.p50_ms)),
        kv("P99 延迟(毫秒)", num(sys.p99_ms)),
    ];
    d.sections.push(Section {
        title: "每日流量".into(),
        columns: ["日期", "请求数", "错误数", "可用率(%)", "P99(毫秒)"]
            .map(String::from)
            .to_vec(),
        rows: by_day
            .iter()
            .map(|(k, a)| {
                let s = a.summary();
                vec![
                    k.clone(),
                    s.requests.to_string(),
                    s.errors.to_string(),
                    num(s.availability),
                    num(s.p99_ms),
                ]
            })
            .collect(),
        chart: Some(Chart {
            title: "每日请求数".into(),
            label_column: 0,
            value_column: 1,
            target: None,
        }),
    });
    d.sections.push(Section {
        title: "各渠道流量".into(),
        columns: ["渠道", "请求数", "错误数", "错误率(%)", "P99(毫秒)"]
            .map(String::from)
            .to_vec(),
        rows: by_channel
            .iter()
            .map(|(k, a)| {
                let s = a.summary();
                vec![
                    channel_zh(k),
                    s.requests.to_string(),
                    s.errors.to_string(),
                    num(s.error_rate),
                    num(s.p99_ms),
                ]
            })
            .collect(),
        chart: Some(Chart {
            title: "各渠道请求数".into(),
            label_column: 0,
            value_column: 1,
            target: None,
        }),
    });
    d.sections.push(Section {
        title: "各服务流量与可用率".into(),
        columns: [
            "服务",
            "请求数",
            "错误数",
            "错误率(%)",
            "可用率(%)",
            "P50(毫秒)",
            "P99(毫秒)",
            "是否达标",
        ]
        .map(String::from)
        .to_vec(),
        rows: by_service
            .iter()
            .map(|(k, a)| {
                let s = a.summary();
                vec![
                    if k.is_empty() {
                        "未匹配服务".into()
                    } else {
                        k.clone()
                    },
                    s.requests.to_string(),
                    s.errors.to_string(),
                    num(s.error_rate),
                    num(s.availability),
                    num(s.p50_ms),
                    num(s.p99_ms),
                    if s.availability >= target {
                        "达标".into()
                    } else {
                        "未达标".into()
                    },
                ]
            })
            .collect(),
        chart: Some(Chart {
            title: "各服务可用率(%)".into(),
            label_column: 0,
            value_column: 4,
            target: Some(target),
        }),
    });
    let mut failing: Vec<(&(String, String), &Agg)> =
        by_route.iter().filter(|(_, a)| a.errors > 0).collect();
    failing.sort_by(|a, b| b.1.errors.cmp(&a.1.errors).then(a.0.cmp(b.0)));
    d.sections.push(Section {
        title: "失败最多的接口 (前 10)".into(),
        columns: ["服务", "接口", "错误数", "请求数", "错误率(%)"]
            .map(String::from)
            .to_vec(),
        rows: failing
            .iter()
            .take(10)
            .map(|((s, r), a)| {
                let x = a.summary();
                vec![
                    s.clone(),
                    r.clone(),
                    x.errors.to_string(),
                    x.requests.to_string(),
                    num(x.error_rate),
                ]
            })
            .collect(),
        chart: Some(Chart {
            title: "接口错误数".into(),
            label_column: 1,
            value_column: 2,
            target: None,
        }),
    });
    Ok(d)
}

/// A label for an admin audit action on a service; unknown ones are shown as they are.
fn action_zh(a: &str) -> String {
    match a {
        "service.create" => "登记".into(),
        "service.update" => "修改".into(),
        "service.submit" => "提交核验".into(),
        "service.publish" => "发布上线".into(),
        "service.offline" => "下线".into(),
        "service.reject" => "退回".into(),
        "service.delete" => "删除".into(),
        "verification.run" => "核验".into(),
        "verification.override" => "核验豁免".into(),
        "revision.create" => "发起变更".into(),
        "revision.update" => "修改变更".into(),
        "revision.submit" => "提交变更核验".into(),
        "revision.apply" => "变更上线".into(),
        "revision.discard" => "放弃变更".into(),
        x => x.to_string(),
    }
}

async fn go_live(app: &App, from: i64, to: i64, now: i64) -> ApiResult<Doc> {
    let mut d = doc("go-live-records", from, to, now);
    // Every event about a service, read generically: records against the service itself, and
    // records of other kinds (verification, revision, …) whose action names the service life
    // cycle or whose `after` names a `service_id`.
    let rows = sqlx::query(
        "SELECT at, actor, role, action, resource_id, after_json FROM admin_audit \
         WHERE at >= $1 AND at < $2 AND (resource_kind = 'service' OR action LIKE 'service.%' \
         OR action LIKE 'verification%' OR action LIKE 'revision%' OR after_json LIKE '%\"service_id\"%') \
         ORDER BY seq",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&app.store.pool)
    .await?;
    let snap = crate::commit::snapshot(app).await?;
    let mut out = Vec::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        let action: String = r.try_get("action")?;
        let id: String = r.try_get("resource_id")?;
        let after: Option<String> = r.try_get("after_json")?;
        let after: Value = after
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or(Value::Null);
        let id = after["service_id"]
            .as_str()
            .filter(|_| !snap.services.iter().any(|s| s.id == id))
            .map(str::to_string)
            .unwrap_or(id);
        // A deleted service keeps its events: named from the record itself.
        let svc = snap.services.iter().find(|s| s.id == id);
        let name = svc
            .map(|s| s.name.to_string())
            .or_else(|| after["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| id.clone());
        let title = svc
            .map(|s| s.title.as_str().to_string())
            .or_else(|| after["title"].as_str().map(str::to_string))
            .unwrap_or_default();
        let agency = svc
            .and_then(|s| snap.agency(&s.agency_id))
            .map(|a| a.title.as_str().to_string())
            .unwrap_or_default();
        let channels = after["channels"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let label = action_zh(&action);
        *counts.entry(label.clone()).or_default() += 1;
        out.push(vec![
            display(r.try_get("at")?),
            name,
            title,
            agency,
            label,
            action,
            r.try_get("actor")?,
            r.try_get("role")?,
            after["status"].as_str().unwrap_or("").to_string(),
            channels,
        ]);
    }
    d.summary = vec![kv("事件总数", out.len())];
    for (k, v) in &counts {
        d.summary.push(kv(&format!("{k}次数"), v));
    }
    d.sections.push(Section {
        title: "事件按类型统计".into(),
        columns: vec!["事件".into(), "次数".into()],
        rows: counts
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect(),
        chart: Some(Chart {
            title: "事件次数".into(),
            label_column: 0,
            value_column: 1,
            target: None,
        }),
    });
    d.sections.push(Section {
        title: "服务上线记录".into(),
        columns: [
            "时间",
            "服务标识",
            "服务名称",
            "委办局",
            "事件",
            "操作标识",
            "操作人",
            "角色",
            "结果状态",
            "渠道",
        ]
        .map(String::from)
        .to_vec(),
        rows: out,
        chart: None,
    });
    Ok(d)
}

async fn security_monthly(app: &App, from: i64, to: i64, now: i64) -> ApiResult<Doc> {
    let mut d = doc("security-monthly", from, to, now);
    let mut total = 0u64;
    let mut auth_fail = 0u64;
    let mut rate = 0u64;
    let mut waf: BTreeMap<String, u64> = BTreeMap::new();
    let mut masked: BTreeMap<String, u64> = BTreeMap::new();
    let mut auth_by_day: BTreeMap<String, u64> = BTreeMap::new();
    traffic::scan(&app.store.pool, from, to, |r| {
        total += 1;
        if r.denied_by == "jwt-auth" || (r.status == 401 && r.denied_by.is_empty()) {
            auth_fail += 1;
            *auth_by_day.entry(crate::local_time::day(r.at)).or_default() += 1;
        }
        if r.denied_by == "rate-limit" || r.status == 429 {
            rate += 1;
        }
        for (plugin, class, action, count) in &r.findings {
            if plugin == "waf" {
                *waf.entry(class.clone()).or_default() += 1;
            } else if action == "masked" {
                *masked.entry(class.clone()).or_default() += count;
            }
        }
    })
    .await?;
    let alerts = sqlx::query(
        "SELECT rule, severity, state, title, created_at FROM alerts WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&app.store.pool)
    .await?;
    let changes = sqlx::query(
        "SELECT at, actor, role, action, resource_kind, resource_id FROM admin_audit WHERE at >= $1 AND at < $2 \
         AND resource_kind IN ('token-key', 'signing-key', 'network-policy', 'limit', 'settings', 'alert-settings', 'alert-destination', 'node') ORDER BY seq",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&app.store.pool)
    .await?;
    d.summary = vec![
        kv("请求总数", total),
        kv("认证失败次数", auth_fail),
        kv("限流拦截次数", rate),
        kv("WAF 命中次数", waf.values().sum::<u64>()),
        kv("脱敏字段数", masked.values().sum::<u64>()),
        kv("告警数", alerts.len()),
        kv("密钥与策略变更次数", changes.len()),
    ];
    d.sections.push(Section {
        title: "每日认证失败".into(),
        columns: vec!["日期".into(), "认证失败次数".into()],
        rows: auth_by_day
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect(),
        chart: Some(Chart {
            title: "每日认证失败次数".into(),
            label_column: 0,
            value_column: 1,
            target: None,
        }),
    });
    d.sections.push(Section {
        title: "WAF 命中（按类别）".into(),
        columns: vec!["类别".into(), "命中次数".into()],
        rows: waf
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect(),
        chart: Some(Chart {
            title: "WAF 命中次数".into(),
            label_column: 0,
            value_column: 1,
            target: None,
        }),
    });
    d.sections.push(Section {
        title: "响应脱敏（按类别）".into(),
        columns: vec!["类别".into(), "脱敏字段数".into()],
        rows: masked
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect(),
        chart: Some(Chart {
            title: "脱敏字段数".into(),
            label_column: 0,
            value_column: 1,
            target: None,
        }),
    });
    let mut alert_rows = Vec::new();
    for a in &alerts {
        alert_rows.push(vec![
            display(a.try_get("created_at")?),
            a.try_get("rule")?,
            a.try_get("severity")?,
            a.try_get("state")?,
            a.try_get("title")?,
        ]);
    }
    d.sections.push(Section {
        title: "告警".into(),
        columns: ["时间", "规则", "级别", "状态", "标题"]
            .map(String::from)
            .to_vec(),
        rows: alert_rows,
        chart: None,
    });
    let mut change_rows = Vec::new();
    for c in &changes {
        change_rows.push(vec![
            display(c.try_get("at")?),
            c.try_get("actor")?,
            c.try_get("role")?,
            c.try_get("action")?,
            c.try_get("resource_kind")?,
            c.try_get("resource_id")?,
        ]);
    }
    d.sections.push(Section {
        title: "密钥与策略变更".into(),
        columns: ["时间", "操作人", "角色", "操作", "对象类型", "对象标识"]
            .map(String::from)
            .to_vec(),
        rows: change_rows,
        chart: None,
    });
    Ok(d)
}
