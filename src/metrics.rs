//! Measurements: latency percentiles and frame-rate summaries. Pure functions over samples.

use std::time::Duration;

/// The `p`-th percentile (0..=100) of samples, nearest-rank; `None` for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Frames per second over `frames` frames whose first and last arrived `span` apart.
pub fn fps(frames: u64, span: Duration) -> f64 {
    if frames < 2 || span.is_zero() { 0.0 } else { (frames - 1) as f64 / span.as_secs_f64() }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 95.0), Some(95.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
    }

    #[test]
    fn fps_from_span() {
        assert_eq!(fps(61, Duration::from_secs(1)), 60.0);
        assert_eq!(fps(1, Duration::from_secs(1)), 0.0);
    }
}
