//! The console's words in Simplified Chinese (default) and English.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    pub fn pick(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// (key, 中文, English)
const WORDS: &[(&str, &str, &str)] = &[
    (
        "app_name",
        "分发 · 城市服务网关控制台",
        "Fenfa · city service gateway console",
    ),
    ("sign_in", "登录", "Sign in"),
    ("sign_out", "退出", "Sign out"),
    ("username", "用户名", "User name"),
    ("password", "密码", "Password"),
    ("totp", "动态口令 (管理员必填)", "TOTP code (admins)"),
    ("overview", "概览", "Overview"),
    ("search", "查询", "Search"),
    ("filter", "筛选", "Filter"),
    ("page", "页", "Page"),
    ("prev", "上一页", "Previous"),
    ("next", "下一页", "Next"),
    ("none", "暂无数据", "Nothing here yet"),
    ("forbidden", "无权访问此页面", "You may not open this page"),
    ("not_found", "页面不存在", "No such page"),
    ("error", "操作未完成", "The change was not made"),
    ("done", "已完成", "Done"),
    ("register_service", "登记服务", "Register a service"),
    ("name", "标识", "Name"),
    ("title", "名称", "Title"),
    ("kind", "类型", "Kind"),
    ("agency", "委办局", "Agency"),
    ("upstream", "后端地址 (host:port)", "Upstream (host:port)"),
    ("capacity", "声明容量 (次/秒)", "Declared capacity (rps)"),
    ("masking", "返回数据脱敏", "Mask personal data in answers"),
    ("status", "状态", "Status"),
    ("channels", "发布渠道", "Channels"),
    ("routes", "接口", "Interfaces"),
    ("add_route", "登记接口", "Register an interface"),
    ("paths", "路径", "Paths"),
    ("methods", "方法", "Methods"),
    ("submit", "提交核验", "Submit for verification"),
    ("verify", "接口核验", "Verify"),
    ("publish", "发布", "Publish"),
    ("offline", "下线", "Take offline"),
    ("reject", "退回", "Send back"),
    ("verifications", "核验记录", "Verifications"),
    ("result", "结果", "Result"),
    ("checks", "检查项", "Checks"),
    ("review_note", "退回原因", "Why it was sent back"),
    ("audit_search", "审计查询", "Audit search"),
    ("request_audit", "请求审计", "Request audit"),
    ("admin_audit", "管理审计", "Admin audit"),
    ("verify_chain", "校验哈希链", "Verify the hash chain"),
    ("chain_ok", "哈希链完整", "The chain verifies"),
    ("acknowledge", "确认", "Acknowledge"),
    ("resolve", "解决", "Resolve"),
    ("note", "备注", "Note"),
    ("traffic", "近24小时流量", "Traffic, last 24 hours"),
    ("services_by_status", "服务状态", "Services by status"),
    ("open_alerts", "未处理告警", "Open alerts"),
    ("open_faults", "未关闭故障", "Open faults"),
    ("active_users", "活跃用户", "Active users"),
    ("config_version", "配置版本", "Config version"),
    ("requests", "请求数", "Requests"),
    ("errors", "错误数", "Errors"),
    ("download", "下载", "Download"),
    ("language", "English", "中文"),
    ("actions", "操作", "Actions"),
    ("reason", "原因", "Reason"),
    ("edit", "修改", "Edit"),
];

/// Every word in `lang`, for the templates (`tr.sign_in`).
pub fn words(lang: Lang) -> Value {
    let mut m = Map::new();
    for (k, zh, en) in WORDS {
        m.insert((*k).into(), Value::String(lang.pick(zh, en).into()));
    }
    Value::Object(m)
}

/// One word (the key itself when unknown).
pub fn word(lang: Lang, key: &str) -> String {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, zh, en)| lang.pick(zh, en).to_string())
        .unwrap_or_else(|| key.to_string())
}
