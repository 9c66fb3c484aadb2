//! The sentence encoder: loads a BERT-family directory (GGUF or Hugging Face safetensors, plus
//! `tokenizer.json`, `config.json` and optional `encoder.json`) and turns texts into pooled,
//! normalised embeddings in padded, length-sorted batches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::bert::{self, Bert, BertConfig, LinearMode, Pass, WeightSource};
use super::files::{self, EncoderMeta, FilesError, Pooling};
use crate::batch::{self, Batch, BatchLimits};
use crate::text::{TextEncoder, TextError, Tokens};

/// Errors loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A file is missing or malformed.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The tokenizer failed.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The weights could not be read or the network failed.
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// The chosen device cannot be used (no GPU, or a build without CUDA).
    #[error("device `{device}`: {reason}")]
    Device {
        device: DeviceChoice,
        reason: String,
    },
}

fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> EncoderError {
    let context = context.into();
    move |source| EncoderError::Candle { context, source }
}

/// Options for loading an encoder.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// Override of the truncation length (tokens, specials included).
    pub max_tokens: Option<usize>,
    /// How quantised linear weights are used.
    pub linear: LinearMode,
    /// Device to run on.
    pub device: DeviceChoice,
    /// With int8 linears, a classification whose closest call (see
    /// [`crate::intent::Resolver::closest_call`]) is under this is encoded again with
    /// [`Pass::Refine`], so that near ties are decided as the exact model decides them; 0 never
    /// re-checks.
    pub recheck_margin: f32,
}

/// The default [`EncoderOptions::recheck_margin`]: on 300 tickets of 12 joined messages the
/// int8 model's top intent then differed from PyTorch f32's on 1, against 12 with no re-check
/// (see the README, Long tickets).
pub const DEFAULT_RECHECK_MARGIN: f32 = 0.015;

/// Checks a re-check margin: a probability shift from 0 (never re-check) to 1 (always).
pub fn check_recheck_margin(margin: f32) -> Result<f32, String> {
    if (0.0..=1.0).contains(&margin) {
        Ok(margin)
    } else {
        Err(format!(
            "the re-check margin is a probability shift from 0 (never re-check) to 1 (always), \
             got {margin}"
        ))
    }
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            max_tokens: None,
            linear: LinearMode::default(),
            device: DeviceChoice::default(),
            recheck_margin: DEFAULT_RECHECK_MARGIN,
        }
    }
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA GPU with this ordinal (needs the `cuda` feature).
    Cuda(usize),
}

impl DeviceChoice {
    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`; valid: cpu, cuda, cuda:N")),
        }
    }

    /// Opens the candle device, or says why it cannot be used.
    pub fn open(self) -> Result<Device, EncoderError> {
        let unusable = |reason: String| EncoderError::Device {
            device: self,
            reason,
        };
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !cfg!(feature = "cuda") => Err(unusable(
                "this binary was built without CUDA support; build it with \
                 `cargo build --release --features cuda` (needs the CUDA toolkit)"
                    .into(),
            )),
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| unusable(root_message(e))),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A candle error's message on one line, without the backtrace candle attaches to it.
fn root_message(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => root_message(*inner),
        candle_core::Error::Context { inner, context } => {
            format!("{context}: {}", root_message(*inner))
        }
        other => other.to_string(),
    }
}

/// A loaded sentence encoder.
#[derive(Debug)]
pub struct Encoder {
    bert: Bert,
    text: TextEncoder,
    meta: EncoderMeta,
    device: Device,
    dir: PathBuf,
    linear: LinearMode,
}

impl Encoder {
    /// Loads the encoder directory `dir`.
    pub fn load(dir: &Path, opts: &EncoderOptions) -> Result<Self, EncoderError> {
        let meta = EncoderMeta::load(dir)?;
        let config_path = files::require(dir, files::HF_CONFIG, "Hugging Face BERT config")?;
        let config: BertConfig = files::read_json(&config_path)?;
        let tok_path = files::require(dir, files::TOKENIZER, "tokenizer")?;
        let max_tokens = opts
            .max_tokens
            .unwrap_or(meta.max_tokens)
            .min(config.max_position_embeddings);
        let started = std::time::Instant::now();
        // The tokenizer's vocabulary is built on one thread of its own while the weights are
        // read and packed (on rayon's pool), so loading takes the longer of the two, not both.
        let ((text, tokenizer_time), network) = std::thread::scope(|s| {
            let text = s.spawn(|| {
                let text = TextEncoder::load(&tok_path, &meta.prefix, max_tokens);
                (text, started.elapsed())
            });
            let network = (|| {
                let device = opts.device.open()?;
                let weights = load_weights(dir, &meta, &device)?;
                let bert = Bert::load(weights.as_ref(), &config, opts.linear)
                    .map_err(candle(format!("{}: building the encoder", dir.display())))?;
                Ok::<_, EncoderError>((device, bert, started.elapsed()))
            })();
            let text = text.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (text, network)
        });
        let (text, (device, bert, weights_time)) = (text?, network?);
        tracing::info!(
            dir = %dir.display(),
            linears = ?opts.linear,
            kernels = ?crate::model::kernels::kernel_path(),
            tokenizer_ms = tokenizer_time.as_millis() as u64,
            weights_ms = weights_time.as_millis() as u64,
            "loaded the encoder"
        );
        Ok(Self {
            bert,
            text,
            meta,
            device,
            dir: dir.to_path_buf(),
            linear: opts.linear,
        })
    }

    /// How its linear layers compute (part of the embeddings' identity: int8 ones differ
    /// slightly from exact f32 ones).
    pub fn linear_mode(&self) -> LinearMode {
        self.linear
    }

    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer with the model's prefix and truncation.
    pub fn text(&self) -> &TextEncoder {
        &self.text
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.bert.config.hidden_size
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// Embeds texts: `[n, h]` f32 on the CPU, rows in input order.
    pub fn embed(&self, texts: &[String], limits: BatchLimits) -> Result<Tensor, EncoderError> {
        let tokens = self.text.encode_many(texts)?;
        self.embed_tokens(&tokens, limits, Pass::Infer)
    }

    /// Embeds already tokenised texts with a pass of kind `pass`, `[n, h]` on the CPU, rows in
    /// input order.
    pub fn embed_tokens(
        &self,
        tokens: &[Tokens],
        limits: BatchLimits,
        pass: Pass,
    ) -> Result<Tensor, EncoderError> {
        let mut rows: Vec<Option<Tensor>> = vec![None; tokens.len()];
        for group in batch::plan(tokens, limits) {
            let items: Vec<&Tokens> = group.iter().map(|&i| &tokens[i]).collect();
            let pooled = self.embed_batch(&items, pass)?;
            for (k, &i) in group.iter().enumerate() {
                rows[i] = Some(pooled.get(k).map_err(candle("splitting batch"))?);
            }
        }
        if rows.is_empty() {
            return Tensor::zeros((0, self.dim()), DType::F32, &Device::Cpu)
                .map_err(candle("empty"));
        }
        let rows: Vec<Tensor> = rows
            .into_iter()
            .map(|r| r.expect("every row planned. This is a bug."))
            .collect();
        Tensor::stack(&rows, 0).map_err(candle("stacking embeddings"))
    }

    /// Embeds one padded batch with a pass of kind `pass`: `[b, h]` on the CPU.
    pub fn embed_batch(&self, items: &[&Tokens], pass: Pass) -> Result<Tensor, EncoderError> {
        let batch = Batch::new(items, &self.device).map_err(candle("building batch"))?;
        let hidden = self
            .bert
            .forward(
                &batch.input_ids,
                &batch.attention_mask,
                &batch.token_type_ids,
                pass,
            )
            .map_err(candle("encoder forward"))?;
        self.pool(&hidden, &batch.attention_mask)
            .map_err(candle("pooling"))
    }

    /// Pools hidden states `[b, s, h]` with the mask into sentence vectors on the CPU.
    pub fn pool(&self, hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let pooled = match self.meta.pooling {
            Pooling::Mean => bert::mean_pool(hidden, mask)?,
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let pooled = if self.meta.normalize {
            bert::l2_normalize(&pooled)?
        } else {
            pooled
        };
        pooled.to_device(&Device::Cpu)
    }
}

/// Tensors of a GGUF file, plus dense overrides (fine-tuned layers).
struct GgufWeights {
    tensors: HashMap<String, Arc<QTensor>>,
    overrides: HashMap<String, Tensor>,
    device: Device,
}

impl WeightSource for GgufWeights {
    fn dense(&self, name: &str) -> candle_core::Result<Tensor> {
        if let Some(t) = self.overrides.get(name) {
            return Ok(t.clone());
        }
        match self.tensors.get(name) {
            Some(q) => q.dequantize(&self.device),
            None => candle_core::bail!("missing tensor `{name}`"),
        }
    }

    fn quantized(&self, name: &str) -> candle_core::Result<Option<Arc<QTensor>>> {
        if self.overrides.contains_key(name) {
            return Ok(None);
        }
        Ok(self
            .tensors
            .get(name)
            .filter(|q| !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16))
            .cloned())
    }
}

/// Tensors of a safetensors file (f32/f16/bf16, read as f32), with or without a `bert.` prefix.
struct SafetensorsWeights {
    vb: VarBuilder<'static>,
    overrides: HashMap<String, Tensor>,
}

impl WeightSource for SafetensorsWeights {
    fn dense(&self, name: &str) -> candle_core::Result<Tensor> {
        if let Some(t) = self.overrides.get(name) {
            return Ok(t.clone());
        }
        for candidate in safetensors_names(name) {
            if self.vb.contains_tensor(&candidate) {
                return self.vb.get_unchecked(&candidate);
            }
        }
        candle_core::bail!("missing tensor `{name}`")
    }

    fn quantized(&self, _name: &str) -> candle_core::Result<Option<Arc<QTensor>>> {
        Ok(None)
    }
}

/// The names a safetensors file may give the HF tensor `name`: as is, with a `bert.` prefix,
/// and with older checkpoints' gamma/beta for LayerNorm parameters.
fn safetensors_names(name: &str) -> [String; 4] {
    let legacy = name
        .replace("LayerNorm.weight", "LayerNorm.gamma")
        .replace("LayerNorm.bias", "LayerNorm.beta");
    let prefixed = format!("bert.{legacy}");
    [name.to_string(), format!("bert.{name}"), legacy, prefixed]
}

/// The weights file of encoder directory `base` with the `tuned` tensors (HF names) in place
/// of its own: a GGUF keeps its other tensors as stored and takes tuned matrices in `blocks`
/// (vectors in f32); a safetensors file takes them in f32. Returns the file's name and bytes.
pub fn tuned_weights(
    base: &Path,
    tuned: &HashMap<String, Tensor>,
    blocks: GgmlDType,
) -> Result<(String, Vec<u8>), EncoderError> {
    let meta = EncoderMeta::load(base)?;
    let path = base.join(&meta.weights);
    let ctx = path.display().to_string();
    let unknown = |name: &str| EncoderError::Candle {
        context: ctx.clone(),
        source: candle_core::Error::Msg(format!("no tensor `{name}` to replace")),
    };
    let bytes = if meta.weights.ends_with(".gguf") {
        let mut file = std::fs::File::open(&path).map_err(|source| FilesError::Io {
            path: path.clone(),
            source,
        })?;
        let content = gguf_file::Content::read(&mut file).map_err(candle(ctx.clone()))?;
        if let Some(name) = tuned
            .keys()
            .find(|n| !content.tensor_infos.contains_key(*n))
        {
            return Err(unknown(name));
        }
        let mut names: Vec<&String> = content.tensor_infos.keys().collect();
        names.sort();
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let q = match tuned.get(name) {
                // Blocks run along rows: a matrix whose rows do not divide into them stays f32.
                Some(t)
                    if t.rank() == 2
                        && t.dim(1)
                            .is_ok_and(|c| c.is_multiple_of(blocks.block_size())) =>
                {
                    QTensor::quantize(t, blocks)
                }
                Some(t) => QTensor::quantize(t, GgmlDType::F32),
                None => content.tensor(&mut file, name, &Device::Cpu),
            }
            .map_err(candle(format!("{ctx}: {name}")))?;
            tensors.push((name.as_str(), q));
        }
        // The writer aligns tensors its own way: the base's alignment key would misplace them.
        let mut metadata: Vec<(&str, &gguf_file::Value)> = content
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != "general.alignment")
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        metadata.sort_by_key(|(k, _)| *k);
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (*n, q)).collect();
        let mut buf = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &metadata, &refs).map_err(candle(ctx.clone()))?;
        buf.into_inner()
    } else {
        let mut all =
            candle_core::safetensors::load(&path, &Device::Cpu).map_err(candle(ctx.clone()))?;
        for (name, t) in tuned {
            let key = safetensors_names(name)
                .into_iter()
                .find(|k| all.contains_key(k))
                .ok_or_else(|| unknown(name))?;
            all.insert(key, t.to_dtype(DType::F32).map_err(candle(ctx.clone()))?);
        }
        super::head::safetensors_bytes(&all).map_err(candle(ctx.clone()))?
    };
    Ok((meta.weights, bytes))
}

/// Opens the weights of an encoder directory (GGUF or safetensors, plus overrides).
pub fn load_weights(
    dir: &Path,
    meta: &EncoderMeta,
    device: &Device,
) -> Result<Box<dyn WeightSource>, EncoderError> {
    let path = dir.join(&meta.weights);
    if !path.exists() {
        return Err(FilesError::Missing {
            dir: dir.to_path_buf(),
            file: "model.gguf or model.safetensors",
            what: "encoder weights",
        }
        .into());
    }
    let overrides = load_overrides(dir, device)?;
    if meta.weights.ends_with(".gguf") {
        let mut file = std::fs::File::open(&path).map_err(|source| FilesError::Io {
            path: path.clone(),
            source,
        })?;
        let ctx = format!("{}", path.display());
        let content = gguf_file::Content::read(&mut file).map_err(candle(ctx.clone()))?;
        let mut tensors = HashMap::new();
        for name in content.tensor_infos.keys() {
            let q = content
                .tensor(&mut file, name, device)
                .map_err(candle(ctx.clone()))?;
            tensors.insert(name.clone(), Arc::new(q));
        }
        return Ok(Box::new(GgufWeights {
            tensors,
            overrides,
            device: device.clone(),
        }));
    }
    // SAFETY: the file is memory-mapped read-only; it must not be modified while loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, device) }
        .map_err(candle(path.display().to_string()))?;
    Ok(Box::new(SafetensorsWeights { vb, overrides }))
}

fn load_overrides(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>, EncoderError> {
    let path = dir.join(files::OVERRIDES);
    if !path.exists() {
        return Ok(HashMap::new());
    }
    candle_core::safetensors::load(&path, device).map_err(candle(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An encoder directory holding `tensors` in `file` (GGUF: matrices in Q4_0).
    fn weights_dir(file: &str, tensors: &HashMap<String, Tensor>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let meta = serde_json::json!({"format_version": 1, "weights": file, "prefix": "query: ",
            "pooling": "mean", "normalize": true, "max_tokens": 16, "source": "test"});
        std::fs::write(dir.path().join(files::ENCODER_META), meta.to_string()).unwrap();
        if file.ends_with(".gguf") {
            let mut names: Vec<&String> = tensors.keys().collect();
            names.sort();
            let qs: Vec<(&str, QTensor)> = names
                .iter()
                .map(|n| {
                    let t = &tensors[*n];
                    let dtype = if t.rank() == 2 && t.dim(1).unwrap().is_multiple_of(32) {
                        GgmlDType::Q4_0
                    } else {
                        GgmlDType::F32
                    };
                    (n.as_str(), QTensor::quantize(t, dtype).unwrap())
                })
                .collect();
            let refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (*n, q)).collect();
            let mut f = std::fs::File::create(dir.path().join(file)).unwrap();
            gguf_file::write(&mut f, &[], &refs).unwrap();
        } else {
            candle_core::safetensors::save(tensors, dir.path().join(file)).unwrap();
        }
        dir
    }

    fn base_tensors(prefix: &str) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        HashMap::from([
            (
                format!("{prefix}l.0.dense.weight"),
                Tensor::randn(0f32, 1.0, (4, 64), &dev).unwrap(),
            ),
            (
                format!("{prefix}l.0.dense.bias"),
                Tensor::randn(0f32, 1.0, 4, &dev).unwrap(),
            ),
            (
                format!("{prefix}l.1.dense.weight"),
                Tensor::randn(0f32, 1.0, (4, 64), &dev).unwrap(),
            ),
            (
                format!("{prefix}l.2.odd.weight"),
                Tensor::randn(0f32, 1.0, (4, 40), &dev).unwrap(),
            ),
        ])
    }

    #[test]
    fn tuned_weights_replace_the_base_tensors_in_gguf_blocks() {
        let dir = weights_dir("model.gguf", &base_tensors(""));
        let tuned_w = Tensor::randn(0f32, 1.0, (4, 64), &Device::Cpu).unwrap();
        let tuned_b = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        let odd = Tensor::randn(0f32, 1.0, (4, 40), &Device::Cpu).unwrap();
        let tuned = HashMap::from([
            ("l.0.dense.weight".to_string(), tuned_w.clone()),
            ("l.0.dense.bias".to_string(), tuned_b.clone()),
            ("l.2.odd.weight".to_string(), odd.clone()),
        ]);
        let (file, bytes) = tuned_weights(dir.path(), &tuned, GgmlDType::Q8_0).unwrap();
        assert_eq!(file, "model.gguf");
        let mut reader = std::io::Cursor::new(&bytes);
        let content = gguf_file::Content::read(&mut reader).unwrap();
        let read = |name: &str, reader: &mut std::io::Cursor<&Vec<u8>>| {
            content.tensor(reader, name, &Device::Cpu).unwrap()
        };
        let w = read("l.0.dense.weight", &mut reader);
        assert_eq!(w.dtype(), GgmlDType::Q8_0);
        let diff = crate::model::max_abs_diff(&w.dequantize(&Device::Cpu).unwrap(), &tuned_w);
        assert!(diff < 0.05, "{diff}");
        let b = read("l.0.dense.bias", &mut reader);
        assert_eq!(b.dtype(), GgmlDType::F32);
        assert_eq!(
            crate::model::max_abs_diff(&b.dequantize(&Device::Cpu).unwrap(), &tuned_b),
            0.0
        );
        // Rows of 40 do not divide into blocks of 32: that matrix stays f32.
        let o = read("l.2.odd.weight", &mut reader);
        assert_eq!(o.dtype(), GgmlDType::F32);
        assert_eq!(
            crate::model::max_abs_diff(&o.dequantize(&Device::Cpu).unwrap(), &odd),
            0.0
        );
        // Untouched tensors keep their stored blocks, byte for byte.
        let mut base = std::fs::File::open(dir.path().join("model.gguf")).unwrap();
        let base_content = gguf_file::Content::read(&mut base).unwrap();
        let before = base_content
            .tensor(&mut base, "l.1.dense.weight", &Device::Cpu)
            .unwrap();
        let after = read("l.1.dense.weight", &mut reader);
        assert_eq!(after.dtype(), GgmlDType::Q4_0);
        assert_eq!(after.data().unwrap(), before.data().unwrap());
        // The same input writes the same bytes.
        let again = tuned_weights(dir.path(), &tuned, GgmlDType::Q8_0).unwrap();
        assert_eq!(again.1, bytes);
    }

    #[test]
    fn tuned_weights_keep_a_safetensors_file_s_own_names() {
        let dir = weights_dir("model.safetensors", &base_tensors("bert."));
        let tuned_w = Tensor::randn(0f32, 1.0, (4, 64), &Device::Cpu).unwrap();
        let tuned = HashMap::from([("l.0.dense.weight".to_string(), tuned_w.clone())]);
        let (file, bytes) = tuned_weights(dir.path(), &tuned, GgmlDType::Q8_0).unwrap();
        assert_eq!(file, "model.safetensors");
        let read = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        assert_eq!(read.len(), 4);
        let w = &read["bert.l.0.dense.weight"];
        assert_eq!(crate::model::max_abs_diff(w, &tuned_w), 0.0);
    }

    #[test]
    fn tuned_weights_refuse_a_tensor_the_base_lacks() {
        for file in ["model.gguf", "model.safetensors"] {
            let dir = weights_dir(file, &base_tensors(""));
            let tuned = HashMap::from([(
                "l.9.dense.weight".to_string(),
                Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap(),
            )]);
            let err = tuned_weights(dir.path(), &tuned, GgmlDType::Q8_0)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("no tensor `l.9.dense.weight` to replace") && err.contains(file),
                "{err}"
            );
        }
    }
}
