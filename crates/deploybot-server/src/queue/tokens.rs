//! API and enrollment tokens.

use deploybot_store::{NewToken, StoreError};
use deploybot_wire::TokenInfo;

use super::{Actor, Queue};

impl Queue {
    pub async fn create_token(&self, token: NewToken, by: &Actor) -> Result<TokenInfo, StoreError> {
        let info = self.store.create_token(token).await?;
        let target = format!(
            "token {} ({}, role {})",
            info.id,
            info.name,
            info.role.as_str()
        );
        self.audit(by, "create_token", target).await;
        Ok(info)
    }

    /// Revokes a token: it stops working at once on this instance (and on
    /// the others as they hear of it).
    pub async fn revoke_token(
        &self,
        token_id: String,
        by: &Actor,
    ) -> Result<TokenInfo, StoreError> {
        let info = self.store.revoke_token(token_id).await?;
        self.auth.forget_token(&info.id);
        let target = format!("token {} ({})", info.id, info.name);
        self.audit(by, "revoke_token", target).await;
        Ok(info)
    }
}
