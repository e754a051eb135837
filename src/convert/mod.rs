//! RGB → NV12 conversion (being written).
