//! Correlation ids (placeholder, filled in by the correlation work of issue 4).
