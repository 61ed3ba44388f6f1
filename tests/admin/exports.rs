//! Exports: 注册接口信息表, 网络策略清单 and 账户权限配置清单, as CSV (UTF-8 with BOM) and JSON.

use serde_json::json;

use crate::both_backends;
use crate::harness::*;

async fn reports_come_as_csv_with_bom_and_as_json(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "social").await;
    let other = env.agency(&sys, "other").await;
    env.policy(&sec, &ag, "social-net").await;
    env.policy(&sec, &other, "other-net").await;
    let svc = env.service(&sys, &ag, "pension").await;
    env.route(&sys, &svc, "pension-balance", "/social/pension/balance")
        .await;
    let osvc = env.service(&sys, &other, "hidden").await;
    env.route(&sys, &osvc, "hidden-route", "/hidden").await;
    let op = env.operator(&sys, "social-op", &ag).await;

    let (st, headers, body) = env
        .call_raw("GET", "/v1/exports/interfaces?format=csv", Some(&sys), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("interfaces-"));
    assert!(body.starts_with('\u{feff}'), "UTF-8 BOM first");
    let mut lines = body.trim_start_matches('\u{feff}').lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("委办局标识,委办局名称,服务标识,服务名称"),
        "{header}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().any(|r| r.contains("pension-balance")
            && r.contains("/social/pension/balance")
            && r.contains("http://127.0.0.1:18000")),
        "{rows:?}"
    );
    // An operator's table holds only its own agency.
    let v = env.get("/v1/exports/interfaces", &op).await;
    assert_eq!(v["title"], "注册接口信息表");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["route"], "pension-balance");
    assert_eq!(items[0]["agency_title"], "social 委办局");

    let (st, _, body) = env
        .call_raw(
            "GET",
            "/v1/exports/network-policies?format=csv",
            Some(&sec),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        body.starts_with("\u{feff}委办局标识,委办局名称,策略名称,说明,目的地址,端口,协议"),
        "{body}"
    );
    assert!(
        body.contains("social,social 委办局,social-net,,127.0.0.1/32,18000,http"),
        "{body}"
    );
    let v = env.get("/v1/exports/network-policies", &sys).await;
    assert_eq!(v["title"], "网络策略清单");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);

    let v = env.get("/v1/exports/accounts?format=json", &sec).await;
    assert_eq!(v["title"], "账户权限配置清单");
    let items = v["items"].as_array().unwrap();
    let auditor = items.iter().find(|u| u["username"] == "auditor").unwrap();
    assert_eq!(auditor["role_title"], "审计管理员");
    assert_eq!(
        auditor["permissions"],
        "audit-read alert-read inspection-read report-read verification-read"
    );
    assert_eq!(auditor["totp"], "是");
    let op_row = items.iter().find(|u| u["username"] == "social-op").unwrap();
    assert_eq!(op_row["agency"], "social");
    assert!(!op_row["permissions"]
        .as_str()
        .unwrap()
        .contains("service-publish"));
    let (_, _, csv) = env
        .call_raw("GET", "/v1/exports/accounts?format=csv", Some(&sys), None)
        .await;
    assert!(csv.starts_with("\u{feff}账户,角色标识,角色"), "{csv}");
    let (st, _) = env
        .call("GET", "/v1/exports/interfaces?format=xml", Some(&sys), None)
        .await;
    assert_eq!(st, 400);
    let _ = json!(null);
}
both_backends!(reports_come_as_csv_with_bom_and_as_json);
