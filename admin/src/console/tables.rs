//! The list pages: which API list each shows, who may read it (the API's permission table),
//! its columns, and where a row leads.

use crate::authz::{allowed, Action};
use crate::model::Role;

use super::i18n::Lang;

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
        link: None,
        filters: &[],
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
    if allowed(Action::AuditRead).contains(&role) {
        out.push((
            "/console/audit".to_string(),
            lang.pick("审计查询", "Audit search"),
        ));
    }
    out
}
