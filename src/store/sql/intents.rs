//! Intents added to the taxonomy through the API.

use sqlx::Row as _;

use super::{time, Db};
use crate::store::{AddedIntent, Stamp, StoreError};

impl Db {
    pub(in crate::store) async fn add_intent(&self, i: &AddedIntent) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let added = sqlx::query(
            "INSERT INTO intents_added (id, en, ru, author, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING RETURNING id",
        )
        .bind(&i.id)
        .bind(&i.en)
        .bind(&i.ru)
        .bind(&i.author)
        .bind(Stamp(i.created_at))
        .fetch_optional(tx.conn())
        .await?
        .is_some();
        tx.commit().await?;
        Ok(added)
    }

    pub(in crate::store) async fn added_intents(&self) -> Result<Vec<AddedIntent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM intents_added ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AddedIntent {
                    id: r.get("id"),
                    en: r.get("en"),
                    ru: r.get("ru"),
                    author: r.get("author"),
                    created_at: time(r, "created_at")?,
                })
            })
            .collect()
    }
}
