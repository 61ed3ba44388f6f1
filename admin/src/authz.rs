//! Authorization, in one place: which role may do what ([`allowed`]), and which agency's
//! resources an agency operator may see ([`Principal::scope`]).
//!
//! The rules (三权分立): the system admin runs the platform (agencies, services, routes, apps,
//! publication, accounts); the security admin owns keys, network policies, limits, token
//! settings, gateway node tokens and the alerts raised from the audit trails; the audit admin
//! reads the audit trails (and the alerts, read-only) and nothing else;
//! an agency operator works on its own agency's services and routes, may submit them but never
//! publish, and never learns that other agencies' resources exist (they answer 404). Nobody may
//! change or delete an audit record: no such action exists.
//!
//! Handlers call [`Principal::authorize`] before touching anything, and
//! [`Principal::scope`] with the owning agency of what they touch.
//!
//! Accounts acting on accounts follow a finer table, [`account_rule`] (docs/admin.md, "Who can
//! do what to whom"): the system admin creates accounts and runs their life cycle, but an admin
//! role takes effect only once the security admin grants it, and only the security admin
//! changes roles and resets second factors; nobody changes their own account this way; what
//! would silence an audit admin (disable, delete, reset, change role) needs two people — a
//! request by one of the system and security admins and the same request by the other.
//! Every refusal is recorded in the admin audit ([`record_refusal`]).

use crate::error::{ApiError, ApiResult};
use crate::model::Role;

/// An authenticated account, as the request's extractor found it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    /// The agency of an agency operator.
    pub agency_id: Option<String>,
    pub source_ip: String,
    /// SHA-256 of the session token (to end it at logout).
    pub session: String,
}

/// Everything an account can be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    AgencyRead,
    AgencyWrite,
    ServiceRead,
    ServiceWrite,
    ServiceSubmit,
    ServicePublish,
    RouteRead,
    RouteWrite,
    AppRead,
    AppWrite,
    PolicyRead,
    PolicyWrite,
    TokenKeyRead,
    TokenKeyWrite,
    SigningKeyRead,
    SigningKeyWrite,
    LimitRead,
    LimitWrite,
    SettingsRead,
    SettingsWrite,
    UserRead,
    UserCreate,
    UserWrite,
    NodeRead,
    NodeWrite,
    ConfigRead,
    AuditRead,
    ExportInterfaces,
    ExportPolicies,
    ExportAccounts,
    AlertRead,
    AlertWrite,
    InspectionRead,
    InspectionWrite,
    ReportRead,
    ReportWrite,
    VerificationRead,
    VerificationRun,
    VerificationOverride,
}

impl Action {
    pub const ALL: [Action; 39] = {
        use Action::*;
        [
            AgencyRead,
            AgencyWrite,
            ServiceRead,
            ServiceWrite,
            ServiceSubmit,
            ServicePublish,
            RouteRead,
            RouteWrite,
            AppRead,
            AppWrite,
            PolicyRead,
            PolicyWrite,
            TokenKeyRead,
            TokenKeyWrite,
            SigningKeyRead,
            SigningKeyWrite,
            LimitRead,
            LimitWrite,
            SettingsRead,
            SettingsWrite,
            UserRead,
            UserCreate,
            UserWrite,
            NodeRead,
            NodeWrite,
            ConfigRead,
            AuditRead,
            ExportInterfaces,
            ExportPolicies,
            ExportAccounts,
            AlertRead,
            AlertWrite,
            InspectionRead,
            InspectionWrite,
            ReportRead,
            ReportWrite,
            VerificationRead,
            VerificationRun,
            VerificationOverride,
        ]
    };

    /// `agency-read`, `service-publish`, …
    pub fn name(self) -> String {
        let mut out = String::new();
        for (i, c) in format!("{self:?}").chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// What `role` may do, by action name (for the account-permission list).
pub fn permissions(role: Role) -> Vec<String> {
    Action::ALL
        .into_iter()
        .filter(|a| allowed(*a).contains(&role))
        .map(Action::name)
        .collect()
}

use Role::{AgencyOperator as OP, AuditAdmin as AUD, SecurityAdmin as SEC, SystemAdmin as SYS};

/// The permission table.
pub fn allowed(action: Action) -> &'static [Role] {
    use Action::*;
    match action {
        AgencyRead => &[SYS, SEC, OP],
        AgencyWrite => &[SYS],
        ServiceRead => &[SYS, SEC, OP],
        ServiceWrite => &[SYS, OP],
        ServiceSubmit => &[SYS, OP],
        ServicePublish => &[SYS],
        RouteRead => &[SYS, SEC, OP],
        RouteWrite => &[SYS, OP],
        AppRead => &[SYS, SEC, OP],
        AppWrite => &[SYS],
        PolicyRead => &[SYS, SEC, OP],
        PolicyWrite => &[SEC],
        TokenKeyRead => &[SYS, SEC],
        TokenKeyWrite => &[SEC],
        SigningKeyRead => &[SYS, SEC, OP],
        SigningKeyWrite => &[SEC],
        LimitRead => &[SYS, SEC, OP],
        LimitWrite => &[SEC],
        SettingsRead => &[SYS, SEC],
        SettingsWrite => &[SEC],
        UserRead => &[SYS, SEC],
        UserCreate => &[SYS],
        // Which account changes each may make, on whom: [`account_rule`].
        UserWrite => &[SYS, SEC],
        NodeRead => &[SYS, SEC],
        NodeWrite => &[SEC],
        ConfigRead => &[SYS, SEC],
        AuditRead => &[AUD],
        ExportInterfaces => &[SYS, OP],
        ExportPolicies => &[SYS, SEC],
        ExportAccounts => &[SYS, SEC],
        // Alerts come from the audit trails: the security admin handles them, the audit admin
        // reads them (and their handling) to check on it.
        AlertRead => &[SEC, AUD],
        AlertWrite => &[SEC],
        // Daily inspection and fault records: the system admin runs the platform and handles
        // its faults; the security and audit admins read them.
        InspectionRead => &[SYS, SEC, AUD],
        InspectionWrite => &[SYS],
        // Reports and active-user counts: read by all three admins, generated by the system and
        // security admins.
        ReportRead => &[SYS, SEC, AUD],
        ReportWrite => &[SYS, SEC],
        // Go-live verification (docs/verification.md): run by the platform's admins, read by
        // the agency whose service it is (its reasons to fix) and the audit admin; only the
        // security admin overrides a failure, with a written reason.
        VerificationRead => &[SYS, SEC, AUD, OP],
        VerificationRun => &[SYS, SEC],
        VerificationOverride => &[SEC],
    }
}

impl Principal {
    /// 403 unless the role may do `action`.
    pub fn authorize(&self, action: Action) -> ApiResult<()> {
        if allowed(action).contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// Whether this account may see a resource owned by `agency` (`None`: platform-wide).
    pub fn sees(&self, agency: Option<&str>) -> bool {
        match (self.role, agency) {
            (Role::AgencyOperator, Some(a)) => self.agency_id.as_deref() == Some(a),
            _ => true,
        }
    }

    /// 404 (`no such {what}`) when an agency operator reaches for another agency's resource.
    pub fn scope(&self, agency: Option<&str>, what: &str) -> ApiResult<()> {
        if self.sees(agency) {
            Ok(())
        } else {
            Err(ApiError::not_found(what))
        }
    }

    /// Agency operators may only write platform-wide resources they were never granted; this
    /// names their agency for inputs that may omit it.
    pub fn own_agency(&self) -> Option<&str> {
        match self.role {
            Role::AgencyOperator => self.agency_id.as_deref(),
            _ => None,
        }
    }
}

/// Account-changing actions, as the separation-of-duties table names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountAction {
    Create,
    ChangeRole,
    Disable,
    Enable,
    Delete,
    ResetPassword,
    ResetTotp,
    Unlock,
    MoveAgency,
}

impl AccountAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::ChangeRole => "change-role",
            Self::Disable => "disable",
            Self::Enable => "enable",
            Self::Delete => "delete",
            Self::ResetPassword => "reset-password",
            Self::ResetTotp => "reset-totp",
            Self::Unlock => "unlock",
            Self::MoveAgency => "move-agency",
        }
    }
}

/// How an allowed account change is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountRule {
    /// The actor's request alone does it.
    Alone,
    /// It needs the same request from an account of the other of the system and security admin
    /// roles (two people); the first request only registers it.
    SecondPerson,
}

/// Whether `actor` may do `action` to an account holding `target` (`pending`: an admin role not
/// granted yet). `None`: refused. Acting on one's own account is refused before this is asked.
pub fn account_rule(
    actor: Role,
    action: AccountAction,
    target: Role,
    pending: bool,
) -> Option<AccountRule> {
    use AccountAction::*;
    use AccountRule::*;
    if !matches!(actor, SYS | SEC) {
        return None;
    }
    let only = |r: Role| (actor == r).then_some(Alone);
    match (action, target) {
        (Create, _) => only(SYS),
        // Granting a role the system admin asked for when creating the account.
        (ChangeRole, _) if pending => only(SEC),
        (ChangeRole | Disable | Delete | ResetPassword | ResetTotp, AUD) => Some(SecondPerson),
        (ChangeRole | ResetTotp, _) => only(SEC),
        (Disable | Enable | Delete | ResetPassword | Unlock | MoveAgency, _) => only(SYS),
    }
}

impl Principal {
    /// The rule for `action` on the account `target` (its id, role and whether the role is still
    /// pending), or 403 when the actor may not (always for one's own account).
    pub fn account_rule(
        &self,
        action: AccountAction,
        target_id: &str,
        target: Role,
        pending: bool,
    ) -> ApiResult<AccountRule> {
        if target_id == self.user_id {
            return Err(ApiError::Forbidden(
                "nobody may change their own account this way (use /v1/auth/password for your password)".into(),
            ));
        }
        account_rule(self.role, action, target, pending).ok_or_else(|| {
            ApiError::Forbidden(format!(
                "a {} may not {} an account of role {}{} (see docs/admin.md)",
                self.role.as_str(),
                action.name(),
                target.as_str(),
                if pending { " (not granted yet)" } else { "" }
            ))
        })
    }
}

/// Records a refused attempt (403) in the admin audit: who tried what, from where. Failing to
/// record is logged, and the refusal stands.
pub async fn record_refusal(
    app: &crate::app::App,
    p: &Principal,
    attempted: &str,
    resource_kind: &str,
    resource_id: &str,
    reason: &str,
) {
    let res = async {
        let w = crate::commit::begin_write(app).await?;
        w.finish(
            &crate::commit::Actor::from(p),
            "authz.refused",
            crate::commit::AuditTarget {
                kind: resource_kind.to_string(),
                id: resource_id.to_string(),
                after: Some(serde_json::json!({"attempted": attempted, "reason": reason})),
                ..Default::default()
            },
        )
        .await
    }
    .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "cannot record a refused attempt in the admin audit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_admin_reads_audit_and_nothing_else() {
        use Action::*;
        for a in Action::ALL {
            assert_eq!(
                allowed(a).contains(&AUD),
                // What the trails show, and the monitoring built on them, read-only.
                [
                    AuditRead,
                    AlertRead,
                    InspectionRead,
                    ReportRead,
                    VerificationRead
                ]
                .contains(&a),
                "{a:?}"
            );
            if a == AuditRead {
                assert_eq!(allowed(a), &[AUD]);
            }
        }
        assert!(!allowed(ServicePublish).contains(&OP));
        assert_eq!(ServicePublish.name(), "service-publish");
        assert_eq!(
            permissions(AUD),
            [
                "audit-read",
                "alert-read",
                "inspection-read",
                "report-read",
                "verification-read"
            ]
            .map(String::from)
            .to_vec()
        );
    }
}
