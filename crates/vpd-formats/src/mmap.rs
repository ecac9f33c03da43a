//! Read-only memory maps of model files, and alignment-checked typed views into them.
//!
//! This is the one place in the formats crate that needs `unsafe`: mapping a file.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{FormatError, Result};

/// A read-only mapping of a whole file, remembered with its path for error messages.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps `path` read-only.
    ///
    /// # Errors
    /// The file cannot be opened or mapped.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| FormatError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Model files are not
        // expected to change while served; if another process truncates the file, reads
        // may fault (SIGBUS), which is the documented limit of every mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Self { path: path.to_path_buf(), map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// Reinterprets `bytes` as `&[T]`, refusing misaligned or ragged slices.
///
/// # Errors
/// The slice's start is not aligned for `T` or its length is not a multiple of `size_of::<T>()`.
pub fn typed_view<'a, T: bytemuck::Pod>(bytes: &'a [u8], path: &Path, tensor: &str) -> Result<&'a [T]> {
    bytemuck::try_cast_slice(bytes).map_err(|e| FormatError::Tensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        detail: format!("cannot view {} bytes as {}: {e:?}", bytes.len(), std::any::type_name::<T>()),
    })
}
