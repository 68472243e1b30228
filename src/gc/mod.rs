//! The cycle collector (placeholder).
