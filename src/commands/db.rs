//! `db copy`: moving up from SQLite to PostgreSQL (or back) with everything the service keeps.

use anyhow::{Context, Result};

use crate::cli::{DbAction, DbArgs};
use crate::store::{copy, Connect, DatabaseUrl, Store};

/// Opens (and migrates) one side of the copy; the source must exist (a mistyped path would
/// otherwise be created empty and copied as nothing).
async fn open(url: &str, source: bool) -> Result<Store> {
    let url = DatabaseUrl::parse(url, None)?;
    if let Some(path) = url.sqlite_path().filter(|p| source && !p.exists()) {
        anyhow::bail!("--from {}: no such database file", path.display());
    }
    let how = Connect {
        password: crate::config::database_password(None).map_err(anyhow::Error::msg)?,
    };
    Store::connect(&url, &how)
        .await
        .with_context(|| url.to_string())
}

/// `db copy --from A --to B`.
pub(super) async fn db(a: DbArgs) -> Result<()> {
    let DbAction::Copy { from, to } = a.action;
    let source = open(&from, true).await?;
    let target = open(&to, false).await?;
    let copied = copy::copy(&source, &target)
        .await
        .with_context(|| format!("copying {} into {}", source.url(), target.url()))?;
    println!("| table | rows |");
    println!("|---|---:|");
    for (table, rows) in &copied {
        println!("| {table} | {rows} |");
    }
    eprintln!(
        "copied {} into {}; point `database` at the new one",
        source.url(),
        target.url()
    );
    source.close().await;
    target.close().await;
    Ok(())
}
