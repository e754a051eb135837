//! Annex-B NAL splitting and SPS parsing (being written).
