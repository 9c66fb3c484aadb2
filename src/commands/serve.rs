//! `serve` and `hash-token`.

use anyhow::{bail, Result};

use super::runtime;
use crate::cli::ServeArgs;
use crate::config::Settings;
use crate::server;

pub(super) fn serve(a: &ServeArgs) -> Result<()> {
    let settings = Settings::resolve(a).map_err(anyhow::Error::msg)?;
    runtime()?.block_on(server::serve(settings))
}

pub(super) fn hash_token() -> Result<()> {
    let mut token = String::new();
    std::io::stdin().read_line(&mut token)?;
    let token = token.trim();
    if token.len() < 16 {
        bail!("the token is {} characters; use at least 16 random characters (e.g. `openssl rand -hex 32`)", token.len());
    }
    println!("{}", server::auth::hash_token(token));
    Ok(())
}
