//! The list pages: which API list each shows, who may read it (the API's permission table),
//! its columns, and where a row leads.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::authz::{allowed, Action};
use crate::model::Role;

use super::i18n::Lang;

/// A form field of a list page's "new" form.
pub struct Field {
    pub name: &'static str,
    pub zh: &'static str,
    pub en: &'static str,
    pub kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Password,
    /// One of these values.
    Choice(&'static [&'static str]),
    /// An agency, chosen from those the account may see.
    Agency,
    /// Optional text.
    Optional,
    /// A JSON document (a textarea), sent as parsed JSON.
    Json,
}

/// The "new" form of a list page: who may use it (the API's action) and how its fields become
/// the API's JSON body (the API validates it).
pub struct Create {
    pub action: Action,
    pub fields: &'static [Field],
    pub build: fn(&BTreeMap<String, String>) -> Value,
}

/// A button on each row: `POST {api}/{id}/{step}` with a note, or, with `put`, `PUT {api}/{id}`
/// with the body it builds from the row (no note).
pub struct RowAction {
    pub step: &'static str,
    pub zh: &'static str,
    pub en: &'static str,
    pub action: Action,
    /// Shown only on rows it applies to.
    pub when: fn(&Value) -> bool,
    pub put: Option<fn(&Value) -> Value>,
}

fn state_is(row: &Value, s: &str) -> bool {
    row["state"] == s
}

fn get<'a>(f: &'a BTreeMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or("")
}

fn opt(f: &BTreeMap<String, String>, k: &str) -> Value {
    match get(f, k) {
        "" => Value::Null,
        v => json!(v),
    }
}

fn num(f: &BTreeMap<String, String>, k: &str) -> Value {
    let v = get(f, k);
    v.parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(v))
}

fn json_of(f: &BTreeMap<String, String>, k: &str) -> Value {
    serde_json::from_str(get(f, k)).unwrap_or_else(|_| json!(get(f, k)))
}

fn list(f: &BTreeMap<String, String>, k: &str) -> Value {
    json!(get(f, k)
        .split([',', ' ', '，'])
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>())
}

pub struct Table {
    /// `/console/t/{slug}`.
    pub slug: &'static str,
    /// The API list it shows.
    pub api: &'static str,
    /// Who may read it: the action the API endpoint checks.
    pub action: Action,
    pub zh: &'static str,
    pub en: &'static str,
    /// (JSON key, 中文, English).
    pub columns: &'static [(&'static str, &'static str, &'static str)],
    /// A row's own page, `{id}` filled.
    pub link: Option<&'static str>,
    /// Query parameters passed on to the API as filters.
    pub filters: &'static [&'static str],
    pub create: Option<Create>,
    pub row_actions: &'static [RowAction],
}

impl Table {
    pub fn title(&self, lang: Lang) -> &'static str {
        lang.pick(self.zh, self.en)
    }
}

pub const TABLES: &[Table] = &[
    Table {
        slug: "services",
        api: "/v1/services",
        action: Action::ServiceRead,
        zh: "服务",
        en: "Services",
        columns: &[
            ("name", "标识", "Name"),
            ("title", "名称", "Title"),
            ("kind", "类型", "Kind"),
            ("status", "状态", "Status"),
            ("channels", "发布渠道", "Channels"),
            ("capacity_rps", "容量", "Capacity"),
        ],
        link: Some("/console/services/{id}"),
        filters: &["status", "agency_id"],
        create: None,
        row_actions: &[],
    },
    Table {
        slug: "routes",
        api: "/v1/routes",
        action: Action::RouteRead,
        zh: "接口",
        en: "Interfaces",
        columns: &[
            ("name", "标识", "Name"),
            ("description", "说明", "Description"),
            ("paths", "路径", "Paths"),
            ("methods", "方法", "Methods"),
            ("service_id", "服务", "Service"),
        ],
        link: Some("/console/services/{service_id}"),
        filters: &["service_id"],
        create: None,
        row_actions: &[],
    },
    Table {
        slug: "agencies",
        api: "/v1/agencies",
        action: Action::AgencyRead,
        zh: "委办局",
        en: "Agencies",
        columns: &[
            ("name", "标识", "Name"),
            ("title", "名称", "Title"),
            ("path_prefixes", "路径前缀", "Path prefixes"),
            ("hosts", "域名", "Hosts"),
        ],
        link: None,
        filters: &[],
        create: Some(Create {
            action: Action::AgencyWrite,
            fields: &[
                Field {
                    name: "name",
                    zh: "标识",
                    en: "Name",
                    kind: Kind::Text,
                },
                Field {
                    name: "title",
                    zh: "名称",
                    en: "Title",
                    kind: Kind::Text,
                },
                Field {
                    name: "path_prefixes",
                    zh: "路径前缀",
                    en: "Path prefixes",
                    kind: Kind::Optional,
                },
            ],
            build: |f| json!({"name": get(f, "name"), "title": get(f, "title"), "path_prefixes": list(f, "path_prefixes")}),
        }),
        row_actions: &[],
    },
    Table {
        slug: "apps",
        api: "/v1/apps",
        action: Action::AppRead,
        zh: "小程序",
        en: "Apps",
        columns: &[
            ("channel", "渠道", "Channel"),
            ("app_id", "应用标识", "App id"),
            ("name", "名称", "Name"),
        ],
        link: None,
        filters: &[],
        create: None,
        row_actions: &[],
    },
    Table {
        slug: "network-policies",
        api: "/v1/network-policies",
        action: Action::PolicyRead,
        zh: "网络策略",
        en: "Network policies",
        columns: &[
            ("name", "标识", "Name"),
            ("agency_id", "委办局", "Agency"),
            ("rules", "规则", "Rules"),
        ],
        link: None,
        filters: &[],
        create: Some(Create {
            action: Action::PolicyWrite,
            fields: &[
                Field {
                    name: "agency_id",
                    zh: "委办局",
                    en: "Agency",
                    kind: Kind::Agency,
                },
                Field {
                    name: "name",
                    zh: "标识",
                    en: "Name",
                    kind: Kind::Text,
                },
                Field {
                    name: "destination",
                    zh: "目的地址",
                    en: "Destination",
                    kind: Kind::Text,
                },
                Field {
                    name: "port",
                    zh: "端口",
                    en: "Port",
                    kind: Kind::Number,
                },
                Field {
                    name: "protocol",
                    zh: "协议",
                    en: "Protocol",
                    kind: Kind::Choice(&["https", "http"]),
                },
            ],
            build: |f| {
                json!({"agency_id": get(f, "agency_id"), "name": get(f, "name"),
                "rules": [{"destination": get(f, "destination"), "port": num(f, "port"), "protocol": get(f, "protocol")}]})
            },
        }),
        row_actions: &[],
    },
    Table {
        slug: "token-keys",
        api: "/v1/token-keys",
        action: Action::TokenKeyRead,
        zh: "令牌密钥",
        en: "Token keys",
        columns: &[
            ("kid", "密钥标识", "Key id"),
            ("alg", "算法", "Algorithm"),
            ("status", "状态", "Status"),
        ],
        link: None,
        filters: &[],
        create: Some(Create {
            action: Action::TokenKeyWrite,
            fields: &[Field {
                name: "jwk",
                zh: "JWK (含 kid 与 alg)",
                en: "JWK (with kid and alg)",
                kind: Kind::Json,
            }],
            build: |f| json!({"jwk": json_of(f, "jwk")}),
        }),
        row_actions: &[],
    },
    Table {
        slug: "signing-keys",
        api: "/v1/signing-keys",
        action: Action::SigningKeyRead,
        zh: "签名密钥",
        en: "Signing keys",
        columns: &[
            ("key_id", "密钥标识", "Key id"),
            ("agency_id", "委办局", "Agency"),
            ("status", "状态", "Status"),
        ],
        link: None,
        filters: &[],
        create: Some(Create {
            action: Action::SigningKeyWrite,
            fields: &[Field {
                name: "agency_id",
                zh: "委办局",
                en: "Agency",
                kind: Kind::Agency,
            }],
            build: |f| json!({"agency_id": get(f, "agency_id")}),
        }),
        row_actions: &[],
    },
    Table {
        slug: "limits",
        api: "/v1/limits",
        action: Action::LimitRead,
        zh: "限流",
        en: "Rate limits",
        columns: &[
            ("service_id", "服务", "Service"),
            ("limits", "限流规则", "Limits"),
        ],
        link: None,
        filters: &[],
        create: Some(Create {
            action: Action::LimitWrite,
            fields: &[
                Field {
                    name: "service_id",
                    zh: "服务标识",
                    en: "Service id",
                    kind: Kind::Text,
                },
                Field {
                    name: "key",
                    zh: "限流维度",
                    en: "Key",
                    kind: Kind::Choice(&["app", "user", "channel", "ip", "route", "service"]),
                },
                Field {
                    name: "rate",
                    zh: "次数",
                    en: "Rate",
                    kind: Kind::Number,
                },
                Field {
                    name: "per",
                    zh: "时间窗",
                    en: "Per",
                    kind: Kind::Choice(&["1s", "1m", "1h"]),
                },
            ],
            build: |f| {
                json!({"service_id": get(f, "service_id"),
                "limits": [{"key": get(f, "key"), "rate": num(f, "rate"), "per": get(f, "per")}]})
            },
        }),
        row_actions: &[],
    },
    Table {
        slug: "users",
        api: "/v1/users",
        action: Action::UserRead,
        zh: "账户与角色",
        en: "Accounts and roles",
        columns: &[
            ("username", "用户名", "User name"),
            ("role", "角色", "Role"),
            ("agency_id", "委办局", "Agency"),
            ("disabled", "停用", "Disabled"),
            ("role_pending", "待授权", "Role pending"),
        ],
        link: None,
        filters: &[],
        create: Some(Create {
            action: Action::UserCreate,
            fields: &[
                Field {
                    name: "username",
                    zh: "用户名",
                    en: "User name",
                    kind: Kind::Text,
                },
                Field {
                    name: "role",
                    zh: "角色",
                    en: "Role",
                    kind: Kind::Choice(&[
                        "agency-operator",
                        "system-admin",
                        "security-admin",
                        "audit-admin",
                    ]),
                },
                Field {
                    name: "agency_id",
                    zh: "委办局 (机构操作员)",
                    en: "Agency (operators)",
                    kind: Kind::Agency,
                },
                Field {
                    name: "password",
                    zh: "初始密码",
                    en: "Initial password",
                    kind: Kind::Password,
                },
            ],
            build: |f| {
                json!({"username": get(f, "username"), "role": get(f, "role"),
                "agency_id": if get(f, "role") == "agency-operator" { opt(f, "agency_id") } else { Value::Null },
                "password": get(f, "password")})
            },
        }),
        row_actions: &[
            RowAction {
                step: "disable",
                zh: "停用",
                en: "Disable",
                action: Action::UserWrite,
                when: |r| r["disabled"] == false,
                put: Some(|_| json!({"disabled": true})),
            },
            RowAction {
                step: "enable",
                zh: "启用",
                en: "Enable",
                action: Action::UserWrite,
                when: |r| r["disabled"] == true,
                put: Some(|_| json!({"disabled": false})),
            },
            RowAction {
                step: "grant",
                zh: "授予角色",
                en: "Grant the role",
                action: Action::UserWrite,
                when: |r| r["role_pending"] == true,
                put: Some(|r| json!({"role": r["role"]})),
            },
        ],
    },
    Table {
        slug: "nodes",
        api: "/v1/nodes",
        action: Action::NodeRead,
        zh: "网关节点",
        en: "Gateway nodes",
        columns: &[
            ("name", "节点", "Node"),
            ("created_at", "登记时间", "Registered"),
            ("last_seen", "最近活动", "Last seen"),
        ],
        link: None,
        filters: &[],
        create: Some(Create {
            action: Action::NodeWrite,
            fields: &[Field {
                name: "name",
                zh: "节点名称",
                en: "Node name",
                kind: Kind::Text,
            }],
            build: |f| json!({"name": get(f, "name")}),
        }),
        row_actions: &[],
    },
    Table {
        slug: "verifications",
        api: "/v1/verifications",
        action: Action::VerificationRead,
        zh: "核验记录",
        en: "Verifications",
        columns: &[
            ("service_id", "服务", "Service"),
            ("result", "结果", "Result"),
            ("summary", "检查项", "Checks"),
            ("requested_by", "发起人", "By"),
            ("started_at", "时间", "At"),
        ],
        link: Some("/console/verifications/{id}"),
        filters: &["service_id"],
        create: None,
        row_actions: &[],
    },
    Table {
        slug: "alerts",
        api: "/v1/alerts",
        action: Action::AlertRead,
        zh: "告警",
        en: "Alerts",
        columns: &[
            ("title", "告警", "Alert"),
            ("severity", "级别", "Severity"),
            ("state", "状态", "State"),
            ("subject", "对象", "Subject"),
            ("last_seen_local", "最近时间", "Last seen"),
        ],
        link: None,
        filters: &["state"],
        create: None,
        row_actions: &[
            RowAction {
                step: "acknowledge",
                zh: "确认",
                en: "Acknowledge",
                action: Action::AlertWrite,
                when: |r| state_is(r, "open"),
                put: None,
            },
            RowAction {
                step: "resolve",
                zh: "解决",
                en: "Resolve",
                action: Action::AlertWrite,
                when: |r| state_is(r, "open") || state_is(r, "acknowledged"),
                put: None,
            },
        ],
    },
    Table {
        slug: "inspections",
        api: "/v1/inspections",
        action: Action::InspectionRead,
        zh: "巡检",
        en: "Inspections",
        columns: &[
            ("started_at", "时间", "At"),
            ("trigger", "触发", "Trigger"),
            ("requested_by", "发起人", "By"),
            ("summary", "结果", "Summary"),
        ],
        link: Some("/console/inspections/{id}"),
        filters: &[],
        create: Some(Create {
            action: Action::InspectionWrite,
            fields: &[],
            build: |_| json!({}),
        }),
        row_actions: &[],
    },
    Table {
        slug: "faults",
        api: "/v1/faults",
        action: Action::InspectionRead,
        zh: "故障记录",
        en: "Faults",
        columns: &[
            ("service", "服务", "Service"),
            ("route", "接口", "Interface"),
            ("cause", "原因", "Cause"),
            ("state", "状态", "State"),
            ("detail", "详情", "Detail"),
        ],
        link: None,
        filters: &["state"],
        create: None,
        row_actions: &[RowAction {
            step: "close",
            zh: "关闭",
            en: "Close",
            action: Action::InspectionWrite,
            when: |r| state_is(r, "open"),
            put: None,
        }],
    },
    Table {
        slug: "reports",
        api: "/v1/reports",
        action: Action::ReportRead,
        zh: "报告",
        en: "Reports",
        columns: &[
            ("title", "报告", "Report"),
            ("kind", "类型", "Kind"),
            ("period_start", "开始", "From"),
            ("period_end", "结束", "To"),
            ("generated_at", "生成时间", "Generated"),
        ],
        link: Some("/console/reports/{id}"),
        filters: &["kind"],
        create: Some(Create {
            action: Action::ReportWrite,
            fields: &[
                Field {
                    name: "kind",
                    zh: "报告类型",
                    en: "Kind",
                    kind: Kind::Choice(&[
                        "daily-inspection",
                        "weekly-status",
                        "go-live-records",
                        "security-monthly",
                    ]),
                },
                Field {
                    name: "from",
                    zh: "开始日期 (可选)",
                    en: "From (optional)",
                    kind: Kind::Optional,
                },
                Field {
                    name: "to",
                    zh: "结束日期 (可选)",
                    en: "To (optional)",
                    kind: Kind::Optional,
                },
            ],
            build: |f| json!({"kind": get(f, "kind"), "from": opt(f, "from"), "to": opt(f, "to")}),
        }),
        row_actions: &[],
    },
];

pub fn find(slug: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.slug == slug)
}

/// The pages `role` may open, for the navigation: (href, label).
pub fn nav(role: Role, lang: Lang) -> Vec<(String, &'static str)> {
    let mut out = vec![("/console".to_string(), lang.pick("概览", "Overview"))];
    for t in TABLES {
        if allowed(t.action).contains(&role) {
            out.push((format!("/console/t/{}", t.slug), t.title(lang)));
        }
    }
    if [
        Action::ExportInterfaces,
        Action::ExportPolicies,
        Action::ExportAccounts,
    ]
    .iter()
    .any(|a| allowed(*a).contains(&role))
    {
        out.push(("/console/exports".to_string(), lang.pick("导出", "Exports")));
    }
    if allowed(Action::AuditRead).contains(&role) {
        out.push((
            "/console/audit".to_string(),
            lang.pick("审计查询", "Audit search"),
        ));
    }
    out
}
