//! The DingTalk apps of tenants as JeecgBoot keeps them (`sys_third_app_config`).

use crate::jeecg::{AppConfigRow, THIRD_TYPE_DINGTALK};
use crate::secret::Secret;

use super::{Store, StoreResult};

/// `(tenant_id, agent_id, client_id, client_secret, status)` of `sys_third_app_config`.
type AppConfigTuple = (i64, Option<String>, Option<String>, Option<String>, i64);

impl Store {
    /// The DingTalk rows of `sys_third_app_config`, whatever their `status` (which says
    /// whether JeecgBoot's own integration is on: `enabled`).
    pub async fn app_configs(&self) -> StoreResult<Vec<AppConfigRow>> {
        let sql = format!(
            "SELECT {tenant}, agent_id, client_id, client_secret, {status} FROM sys_third_app_config WHERE third_type = ? ORDER BY tenant_id, id",
            tenant = self.int("tenant_id"),
            status = self.int("COALESCE(status, 1)"),
        );
        let sql = self.sql(&sql);
        let rows: Vec<AppConfigTuple> = crate::store::on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(THIRD_TYPE_DINGTALK)
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(tenant_id, agent, client, secret, status)| AppConfigRow {
                tenant_id,
                agent_id: agent.unwrap_or_default(),
                client_id: client.unwrap_or_default(),
                client_secret: Secret::new(secret.unwrap_or_default()),
                enabled: status == 1,
            })
            .collect())
    }
}
