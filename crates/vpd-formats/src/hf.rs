//! Hugging Face checkpoint directories (placeholder: being written).
