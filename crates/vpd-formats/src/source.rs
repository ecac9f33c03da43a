//! The format-neutral view of a checkpoint's tensors.
use crate::error::Result;

/// Element types a checkpoint may store. Quantised types are block formats from ggml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// 32 weights: f16 scale + 32 × i8.
    Q8_0,
    /// 32 weights: f16 scale + 16 bytes of nibbles, value = (q - 8) · d.
    Q4_0,
    /// 32 weights: f16 scale + f16 min + 16 bytes of nibbles, value = q · d + m.
    Q4_1,
}

/// Name, element type and row-major shape (`[out, in]` for a linear weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A checkpoint whose tensors can be listed and read, under Hugging Face names.
pub trait WeightSource: Send + Sync {
    /// Every tensor, in a stable order.
    fn tensors(&self) -> Vec<TensorInfo>;
    /// Metadata of one tensor, if present.
    fn info(&self, name: &str) -> Option<TensorInfo>;
    /// The tensor dequantised/converted to f32, row-major.
    ///
    /// # Errors
    /// Unknown tensor name, or bytes that do not match the declared type and shape.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>>;
}
