//! A BERT encoder on candle-nn that takes dense (f32) or quantised (Q4_0) weights and a training
//! flag (dropout), which candle-transformers' BERT lacks (its dropout is a no-op and it has no
//! quantised variant). Follows candle-transformers 0.11.1 `src/models/bert.rs`
//! (<https://github.com/huggingface/candle/blob/0.11.1/candle-transformers/src/models/bert.rs>),
//! itself a port of Hugging Face `modeling_bert.py`; a test checks the two agree.
//! Owns the network only: no tokenizer, pooling or files.

use std::sync::Mutex;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use crate::model::qgemm::{Int8Linear, QuantizedInput, RefinedInput};
use crate::model::{attention, kernels};
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// The subset of a Hugging Face BERT `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Positions.
    pub max_position_embeddings: usize,
    /// Token types.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// Dropout on hidden states during training.
    #[serde(default = "dropout")]
    pub hidden_dropout_prob: f32,
    /// Dropout on attention probabilities during training.
    #[serde(default = "dropout")]
    pub attention_probs_dropout_prob: f32,
    /// Activation; only the erf GELU (`gelu`) is supported.
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn dropout() -> f32 {
    0.1
}
fn gelu() -> String {
    "gelu".into()
}

/// Where the encoder's tensors come from (HF BERT tensor names, no `bert.` prefix).
pub trait WeightSource {
    /// A dense f32 tensor by name.
    fn dense(&self, name: &str) -> Result<Tensor>;
    /// The tensor in its stored quantised form, when it is stored quantised.
    fn quantized(&self, name: &str) -> Result<Option<std::sync::Arc<QTensor>>>;
}

/// How linear layers hold quantised weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearMode {
    /// Dequantise to f32 at load: exact and, on CPU, faster with gemm.
    #[default]
    Dense,
    /// Keep Q4_0 and multiply with candle's `QMatMul` (activations quantised to Q8_0).
    Quantized,
    /// Int8 weights for CPU inference with AVX-512 VNNI (see [`crate::model::qgemm`]); only
    /// chosen where the CPU has it. Inference only: training needs `Dense`.
    Int8,
}

impl LinearMode {
    /// The fastest exact-enough mode for inference on this machine: int8 where the CPU has
    /// AVX-512 VNNI (and `INTENT_ROUTER_GENERIC_KERNELS` is not set), dense f32 otherwise.
    pub fn auto() -> Self {
        if crate::model::qgemm::available() {
            Self::Int8
        } else {
            Self::Dense
        }
    }

    /// The mode for inference given the `--quantized-linears` choice: Q4 `QMatMul` when asked
    /// for, [`LinearMode::auto`] otherwise.
    pub fn for_inference(quantized_linears: bool) -> Self {
        if quantized_linears {
            Self::Quantized
        } else {
            Self::auto()
        }
    }

    /// The mode for computing training embeddings: int8 becomes exact f32, so that the same
    /// data and seed give the same model on every CPU.
    pub fn for_training(self) -> Self {
        match self {
            Self::Int8 => Self::Dense,
            other => other,
        }
    }
}

/// What a forward pass is for, and so how it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Training: dropout on, differentiable ops only (no int8 layers).
    Train,
    /// Inference at the layers' own precision (int8 where they were loaded so).
    Infer,
    /// Inference where int8 layers read their input in two steps (see
    /// [`crate::model::qgemm::RefinedInput`]): embeddings within about 1e-5 of f32 at twice the
    /// linears' cost, for re-checking a near tie. Other layers compute as in `Infer`.
    Refine,
}

impl Pass {
    /// Whether dropout and the differentiable ops are on.
    pub fn train(self) -> bool {
        self == Self::Train
    }
}

/// Seeded dropout, so that training runs are reproducible.
#[derive(Debug)]
pub struct Dropout {
    p: f32,
    rng: Mutex<rand::rngs::StdRng>,
}

impl Dropout {
    /// Dropout with probability `p`, seeded.
    pub fn new(p: f32, seed: u64) -> Self {
        Self {
            p,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }

    /// Applies dropout when `train` is set, identity otherwise.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(xs.clone());
        }
        let n = xs.elem_count();
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = {
            let mut rng = self
                .rng
                .lock()
                .expect("dropout rng poisoned. This is a bug.");
            (0..n)
                .map(|_| {
                    if rng.random::<f32>() < self.p {
                        0.0
                    } else {
                        keep
                    }
                })
                .collect()
        };
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs * mask
    }
}

/// A linear layer with dense or quantised weights.
#[derive(Debug, Clone)]
enum Proj {
    Dense(Linear),
    Quant(QMatMul, Tensor),
    Int8(Int8Linear),
}

impl Proj {
    fn load(ws: &dyn WeightSource, name: &str, mode: LinearMode) -> Result<Self> {
        let bias = ws.dense(&format!("{name}.bias"))?;
        let wname = format!("{name}.weight");
        if mode == LinearMode::Quantized {
            if let Some(q) = ws.quantized(&wname)? {
                let q = std::sync::Arc::try_unwrap(q).unwrap_or_else(|a| (*a).clone_q());
                return Ok(Self::Quant(QMatMul::from_qtensor(q)?, bias));
            }
        }
        let weight = ws.dense(&wname)?;
        if mode == LinearMode::Int8 && weight.device().is_cpu() {
            // Inference only: the dense copy is dropped (85 MB for the default encoder).
            return Ok(Self::Int8(Int8Linear::new(&weight, &bias)?));
        }
        Ok(Self::Dense(Linear::new(weight, Some(bias))))
    }

    /// Applies layers that read the same input, in order; int8 ones share one quantisation
    /// of it.
    fn forward_shared(projs: &[&Proj], xs: &Tensor, pass: Pass) -> Result<Vec<Tensor>> {
        let shared = if projs.iter().any(|p| matches!(p, Self::Int8(_))) {
            Int8Input::new(xs, pass)?
        } else {
            None
        };
        projs
            .iter()
            .map(|p| match (p, &shared) {
                (Self::Int8(q), Some(x)) => x.apply(q),
                _ => p.forward(xs, pass),
            })
            .collect()
    }

    /// Applies the layer (int8 layers are for inference only: they have no gradient).
    fn forward(&self, xs: &Tensor, pass: Pass) -> Result<Tensor> {
        match self {
            Self::Dense(l) => l.forward(xs),
            Self::Quant(q, b) => q.forward(xs)?.broadcast_add(b),
            Self::Int8(q) => match Int8Input::new(xs, pass)? {
                Some(x) => x.apply(q),
                None => candle_core::bail!(
                    "int8 linear layers cannot be trained; load the encoder with dense linears"
                ),
            },
        }
    }
}

/// An input quantised for the int8 layers that read it, as the pass asks.
enum Int8Input {
    Coarse(QuantizedInput),
    Refined(RefinedInput),
}

impl Int8Input {
    /// The input quantised for `pass`; `None` for training, where int8 layers cannot run.
    fn new(xs: &Tensor, pass: Pass) -> Result<Option<Self>> {
        Ok(match pass {
            Pass::Train => None,
            Pass::Infer => Some(Self::Coarse(QuantizedInput::new(xs)?)),
            Pass::Refine => Some(Self::Refined(RefinedInput::new(xs)?)),
        })
    }

    /// Layer `q` applied to it.
    fn apply(&self, q: &Int8Linear) -> Result<Tensor> {
        match self {
            Self::Coarse(x) => q.forward_quantized(x),
            Self::Refined(x) => q.forward_refined(x),
        }
    }
}

trait CloneQ {
    fn clone_q(&self) -> QTensor;
}

impl CloneQ for QTensor {
    fn clone_q(&self) -> QTensor {
        let data = self.data().expect("quantised tensor data. This is a bug.");
        candle_core::quantized::ggml_file::qtensor_from_ggml(
            self.dtype(),
            &data,
            self.shape().dims().to_vec(),
            &self.device(),
        )
        .expect("re-wrapping quantised tensor. This is a bug.")
    }
}

/// LayerNorm: candle-nn's fused kernel for inference; for training, the same maths from
/// differentiable ops (the fused op has no backward pass, so gradients would stop there).
#[derive(Debug, Clone)]
struct Norm {
    fused: LayerNorm,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    /// The same parameters as plain values, for the fused residual kernel.
    params: kernels::NormParams,
}

impl Norm {
    fn new(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        let params = kernels::NormParams {
            weight: weight.flatten_all()?.to_vec1()?,
            bias: bias.flatten_all()?.to_vec1()?,
            eps: eps as f32,
        };
        Ok(Self {
            fused: LayerNorm::new(weight.clone(), bias.clone(), eps),
            params,
            weight,
            bias,
            eps,
        })
    }

    /// `LayerNorm(xs + residual)`: one fused pass for inference on CPU, candle's ops otherwise.
    fn forward_residual(&self, xs: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        match kernels::add_layer_norm(xs, residual, &self.params, train)? {
            Some(out) => Ok(out),
            None => self.forward(&(xs + residual)?, train),
        }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return self.fused.forward(xs);
        }
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

fn layer_norm(ws: &dyn WeightSource, name: &str, eps: f64) -> Result<Norm> {
    let weight = ws.dense(&format!("{name}.weight"))?;
    let bias = ws.dense(&format!("{name}.bias"))?;
    Norm::new(weight, bias, eps)
}

/// Word embeddings, kept quantised when stored quantised (a 144k × 384 f32 table is 221 MB).
#[derive(Debug)]
enum WordEmbeddings {
    Dense(Tensor),
    Quant(std::sync::Arc<QTensor>),
}

/// Embedding layer: word + position + token type, then LayerNorm.
#[derive(Debug)]
struct Embeddings {
    word: WordEmbeddings,
    position: Tensor,
    token_type: Tensor,
    norm: Norm,
    dropout: Dropout,
}

impl Embeddings {
    fn load(ws: &dyn WeightSource, cfg: &BertConfig, seed: u64) -> Result<Self> {
        let name = "embeddings.word_embeddings.weight";
        let word = match ws.quantized(name)? {
            Some(q) => WordEmbeddings::Quant(q),
            None => WordEmbeddings::Dense(ws.dense(name)?),
        };
        Ok(Self {
            word,
            position: ws.dense("embeddings.position_embeddings.weight")?,
            token_type: ws.dense("embeddings.token_type_embeddings.weight")?,
            norm: layer_norm(ws, "embeddings.LayerNorm", cfg.layer_norm_eps)?,
            dropout: Dropout::new(cfg.hidden_dropout_prob, seed),
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Result<Tensor> {
        let (_b, seq) = input_ids.dims2()?;
        let words = match &self.word {
            WordEmbeddings::Dense(t) => {
                let (b, s) = input_ids.dims2()?;
                t.index_select(&input_ids.flatten_all()?, 0)?
                    .reshape((b, s, ()))?
            }
            WordEmbeddings::Quant(q) => q.embedding(input_ids)?,
        };
        let words = words.to_device(self.position.device())?;
        let pos = self.position.narrow(0, 0, seq)?;
        let (b, s) = token_type_ids.dims2()?;
        let types = self
            .token_type
            .index_select(&token_type_ids.flatten_all()?, 0)?;
        let types = types.reshape((b, s, ()))?;
        let xs = words.broadcast_add(&pos)?.add(&types)?;
        self.dropout.forward(&self.norm.forward(&xs, train)?, train)
    }
}

/// Names of the tensors of layer `index` (Hugging Face BERT naming).
pub fn layer_tensor_names(index: usize) -> Vec<String> {
    let p = format!("encoder.layer.{index}");
    let mut out = Vec::new();
    for m in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ] {
        out.push(format!("{p}.{m}.weight"));
        out.push(format!("{p}.{m}.bias"));
    }
    out
}

/// One transformer layer (post-LayerNorm, as BERT).
#[derive(Debug)]
pub struct BertLayer {
    query: Proj,
    key: Proj,
    value: Proj,
    attn_out: Proj,
    attn_norm: Norm,
    ff_in: Proj,
    ff_out: Proj,
    out_norm: Norm,
    heads: usize,
    attn_dropout: Dropout,
    hidden_dropout: Dropout,
}

impl BertLayer {
    /// Loads layer `index` from `ws`.
    pub fn load(
        ws: &dyn WeightSource,
        cfg: &BertConfig,
        index: usize,
        mode: LinearMode,
        seed: u64,
    ) -> Result<Self> {
        let p = format!("encoder.layer.{index}");
        let proj = |n: &str| Proj::load(ws, &format!("{p}.{n}"), mode);
        Ok(Self {
            query: proj("attention.self.query")?,
            key: proj("attention.self.key")?,
            value: proj("attention.self.value")?,
            attn_out: proj("attention.output.dense")?,
            attn_norm: layer_norm(
                ws,
                &format!("{p}.attention.output.LayerNorm"),
                cfg.layer_norm_eps,
            )?,
            ff_in: proj("intermediate.dense")?,
            ff_out: proj("output.dense")?,
            out_norm: layer_norm(ws, &format!("{p}.output.LayerNorm"), cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            attn_dropout: Dropout::new(cfg.attention_probs_dropout_prob, seed ^ 0xA7),
            hidden_dropout: Dropout::new(cfg.hidden_dropout_prob, seed ^ 0x5E),
        })
    }

    /// Runs the layer; `mask_bias` is `[b, 1, 1, s]` with 0 for tokens and a large negative
    /// value for padding.
    pub fn forward(&self, xs: &Tensor, mask_bias: &Tensor, pass: Pass) -> Result<Tensor> {
        let train = pass.train();
        let (b, s, h) = xs.dims3()?;
        let hd = h / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let qkv = Proj::forward_shared(&[&self.query, &self.key, &self.value], xs, pass)?;
        let [q, k, v] = <[Tensor; 3]>::try_from(qkv).expect("one output per projection");
        let ctx = match attention::fused_attention(&q, &k, &v, mask_bias, self.heads, train)? {
            Some(ctx) => ctx,
            None => {
                let (q, k, v) = (split(q)?, split(k)?, split(v)?);
                let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask_bias)?;
                let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                let probs = self.attn_dropout.forward(&probs, train)?;
                probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?
            }
        };
        let attn = self
            .hidden_dropout
            .forward(&self.attn_out.forward(&ctx, pass)?, train)?;
        let xs = self.attn_norm.forward_residual(&attn, xs, train)?;
        let ff = kernels::gelu_erf(&self.ff_in.forward(&xs, pass)?, train)?;
        let ff = self
            .hidden_dropout
            .forward(&self.ff_out.forward(&ff, pass)?, train)?;
        self.out_norm.forward_residual(&ff, &xs, train)
    }
}

/// The BERT encoder: embeddings and layers, returning the last hidden states.
#[derive(Debug)]
pub struct Bert {
    embeddings: Embeddings,
    /// Transformer layers; public so fine-tuning can replace the top ones.
    pub layers: Vec<BertLayer>,
    /// The config it was built from.
    pub config: BertConfig,
}

impl Bert {
    /// Loads the encoder from `ws` following `cfg`.
    pub fn load(ws: &dyn WeightSource, cfg: &BertConfig, mode: LinearMode) -> Result<Self> {
        if cfg.hidden_act != "gelu" {
            candle_core::bail!(
                "hidden_act `{}` is not supported (only `gelu`)",
                cfg.hidden_act
            );
        }
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(ws, cfg, i, mode, 1000 + i as u64))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(ws, cfg, 7)?,
            layers,
            config: cfg.clone(),
        })
    }

    /// Hidden states `[b, s, h]` for `(input_ids, attention_mask, token_type_ids)`, all `[b, s]`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        let xs = self
            .embeddings
            .forward(input_ids, token_type_ids, pass.train())?;
        self.forward_layers(xs, attention_mask, 0..self.layers.len(), pass)
    }

    /// Whether its linear layers run in int8 (and so [`Pass::Refine`] computes differently
    /// from [`Pass::Infer`]): int8 is asked for and the weights are on the CPU.
    pub fn has_int8(&self) -> bool {
        self.layers.iter().any(|l| matches!(l.query, Proj::Int8(_)))
    }

    /// Runs embeddings only (used to cache the frozen part when fine-tuning).
    pub fn embed(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        self.embeddings.forward(input_ids, token_type_ids, false)
    }

    /// Runs the layers in `range` over hidden states `xs`.
    pub fn forward_layers(
        &self,
        mut xs: Tensor,
        attention_mask: &Tensor,
        range: std::ops::Range<usize>,
        pass: Pass,
    ) -> Result<Tensor> {
        let mask_bias = mask_bias(attention_mask, xs.dtype())?;
        for layer in &self.layers[range] {
            xs = layer.forward(&xs, &mask_bias, pass)?;
        }
        Ok(xs)
    }
}

/// `[b, s]` 0/1 mask -> `[b, 1, 1, s]` additive bias (0 to keep, -1e9 to mask padding).
pub fn mask_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let m = mask.to_dtype(dtype)?.reshape((b, 1, 1, s))?;
    (m.ones_like()? - &m)? * -1e9
}

/// Mean of `hidden` `[b, s, h]` over tokens where `mask` `[b, s]` is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    sum.broadcast_div(&count)
}

/// L2-normalises rows of a `[b, h]` tensor.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    xs.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn training_layer_norm_equals_fused_kernels() {
        let dev = Device::Cpu;
        // 4 × 19 rows of 48: more rows than one task of the residual kernel takes.
        let xs = Tensor::randn(0f32, 2.0, (4, 19, 48), &dev).unwrap();
        let residual = Tensor::randn(0.5f32, 1.0, (4, 19, 48), &dev).unwrap();
        let weight = Tensor::randn(1f32, 0.1, 48, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.1, 48, &dev).unwrap();
        let n = Norm::new(weight, bias, 1e-12).unwrap();
        let (train, infer) = (
            n.forward(&xs, true).unwrap(),
            n.forward(&xs, false).unwrap(),
        );
        assert!(crate::model::max_abs_diff(&train, &infer) < 1e-5);
        // The residual connection: candle's differentiable ops vs the fused inference kernel.
        let sum = (&xs + &residual).unwrap();
        let (train, infer) = (
            n.forward_residual(&xs, &residual, true).unwrap(),
            n.forward_residual(&xs, &residual, false).unwrap(),
        );
        assert!(crate::model::max_abs_diff(&train, &n.forward(&sum, true).unwrap()) < 1e-6);
        assert!(crate::model::max_abs_diff(&train, &infer) < 1e-5);
    }

    #[test]
    fn dropout_is_identity_at_inference_and_seeded_in_training() {
        let xs = Tensor::ones((4, 64), DType::F32, &candle_core::Device::Cpu).unwrap();
        let d = Dropout::new(0.5, 3);
        assert_eq!(
            d.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap(),
            xs.to_vec2::<f32>().unwrap()
        );
        let a = d.forward(&xs, true).unwrap().to_vec2::<f32>().unwrap();
        let b = Dropout::new(0.5, 3)
            .forward(&xs, true)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
        let zeros = a.iter().flatten().filter(|&&v| v == 0.0).count();
        assert!((64..192).contains(&zeros), "{zeros}");
    }
}
