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

/// Upper bounds (seconds) of the latency histogram buckets.
pub(crate) const BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.024, 0.033, 0.050, 0.100, 0.250, 1.0];

/// A latency distribution: Prometheus buckets plus the most recent samples for percentiles.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    recent: std::collections::VecDeque<f64>,
}

/// Samples kept for percentiles.
const RECENT: usize = 512;

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(s * 1000.0);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Percentile of the recent samples, in milliseconds.
    pub(crate) fn percentile_ms(&self, p: f64) -> Option<f64> {
        let v: Vec<f64> = self.recent.iter().copied().collect();
        percentile(&v, p)
    }

    /// Prometheus exposition lines for this histogram with a `stage` label.
    pub fn prometheus(&self, name: &str, stage: &str, out: &mut String) {
        use std::fmt::Write;
        for (le, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{stage=\"{stage}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{stage=\"{stage}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{stage=\"{stage}\"}} {}", self.count);
    }
}

/// Pipeline stages with their own latency histogram.
pub(crate) const STAGES: [&str; 5] = ["capture_wait", "copy", "convert", "encode", "send"];

/// One codec's share of the stream: its viewers and its encoder (`codecs` in `/api/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CodecCounters {
    /// Connected viewers receiving this codec (filled in from the codec's pipeline core when reported).
    pub viewers: usize,
    /// Whether its encoder is open now (it closes when the codec's last viewer leaves).
    pub encoder_open: bool,
    /// The encoder in use, or last used: "x264", "vaapi" (hardware) or "libvpx".
    pub encoder: Option<&'static str>,
    /// Times the encoder was opened (first viewer, size change, error recovery).
    pub encoder_opens: u64,
    pub frames_encoded: u64,
    pub keyframes: u64,
    pub bytes: u64,
}

/// Live counters and per-stage latencies of a streaming session.
#[derive(Debug, Clone, Default)]
pub struct PipelineMetrics {
    pub frames_captured: u64,
    pub frames_encoded: u64,
    /// Frames not delivered: encode failures and frames a lagging viewer skipped.
    pub frames_dropped: u64,
    pub keyframes: u64,
    /// Keyframe requests answered by resending the last IDR (static screen): no encode.
    pub keyframes_resent: u64,
    pub bytes_sent: u64,
    /// Indexed like [`STAGES`].
    pub stages: [Histogram; 5],
    /// Indexed like `frame::Codec::ALL`.
    pub codecs: [CodecCounters; 2],
}

impl PipelineMetrics {
    pub fn observe(&mut self, stage: &str, d: Duration) {
        if let Some(i) = STAGES.iter().position(|s| *s == stage) {
            self.stages[i].observe(d);
        }
    }

    /// `{stage: {p50_ms, p95_ms, count}}` for the status API.
    pub fn stage_summary(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, h) in STAGES.iter().zip(&self.stages) {
            m.insert(
                (*name).to_owned(),
                serde_json::json!({ "p50_ms": h.percentile_ms(50.0), "p95_ms": h.percentile_ms(95.0), "count": h.count() }),
            );
        }
        serde_json::Value::Object(m)
    }

    /// Prometheus text exposition (with gauges passed in).
    /// `codecs`: the per-codec counters with their viewers (the caller knows those).
    pub fn prometheus(
        &self,
        viewers: usize,
        fps: f64,
        bitrate_kbps: f64,
        target_kbps: u32,
        codecs: &[CodecCounters; 2],
    ) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("wl_webrtc_frames_captured_total", "counter", "Frames captured.", self.frames_captured.to_string());
        metric("wl_webrtc_frames_encoded_total", "counter", "Frames encoded.", self.frames_encoded.to_string());
        metric("wl_webrtc_frames_dropped_total", "counter", "Frames not delivered.", self.frames_dropped.to_string());
        metric("wl_webrtc_keyframes_total", "counter", "IDR frames encoded.", self.keyframes.to_string());
        metric(
            "wl_webrtc_keyframes_resent_total",
            "counter",
            "Keyframe requests answered by resending the last IDR.",
            self.keyframes_resent.to_string(),
        );
        metric("wl_webrtc_encoded_bytes_total", "counter", "Encoded bytes produced.", self.bytes_sent.to_string());
        metric("wl_webrtc_viewers", "gauge", "Connected viewers.", viewers.to_string());
        metric("wl_webrtc_fps", "gauge", "Encoded frames per second (last second).", format!("{fps:.3}"));
        metric("wl_webrtc_bitrate_kbps", "gauge", "Encoded bitrate (last second).", format!("{bitrate_kbps:.3}"));
        metric(
            "wl_webrtc_target_bitrate_kbps",
            "gauge",
            "Bitrate the encoder is set to (lowered by viewer feedback on congested links).",
            target_kbps.to_string(),
        );
        for (name, kind, help, value) in [
            (
                "wl_webrtc_codec_viewers",
                "gauge",
                "Connected viewers per codec.",
                (|c: &CodecCounters| c.viewers as u64) as fn(&CodecCounters) -> u64,
            ),
            ("wl_webrtc_encoder_open", "gauge", "Whether the codec's encoder is open.", |c| u64::from(c.encoder_open)),
            ("wl_webrtc_encoder_opens_total", "counter", "Times the codec's encoder was opened.", |c| c.encoder_opens),
            ("wl_webrtc_codec_frames_encoded_total", "counter", "Frames encoded per codec.", |c| c.frames_encoded),
            ("wl_webrtc_codec_keyframes_total", "counter", "Keyframes encoded per codec.", |c| c.keyframes),
            ("wl_webrtc_codec_encoded_bytes_total", "counter", "Encoded bytes per codec.", |c| c.bytes),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (codec, c) in crate::frame::Codec::ALL.iter().zip(codecs) {
                let _ = writeln!(s, "{name}{{codec=\"{}\"}} {}", codec.name(), value(c));
            }
        }
        let name = "wl_webrtc_stage_latency_seconds";
        let _ = writeln!(s, "# HELP {name} Per-stage latency.\n# TYPE {name} histogram");
        for (stage, h) in STAGES.iter().zip(&self.stages) {
            h.prometheus(name, stage, &mut s);
        }
        s
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_exposed() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.prometheus("x", "encode", &mut out);
        assert!(out.contains("x_bucket{stage=\"encode\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{stage=\"encode\",le=\"0.004\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{stage=\"encode\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{stage=\"encode\"} 3\n"), "{out}");
        assert_eq!(h.percentile_ms(50.0), Some(3.0));
    }

    #[test]
    fn pipeline_text_has_every_family() {
        let mut m = PipelineMetrics { frames_captured: 5, ..Default::default() };
        m.observe("convert", Duration::from_millis(1));
        let codecs = [CodecCounters { viewers: 2, encoder_open: true, ..Default::default() }, CodecCounters::default()];
        let text = m.prometheus(2, 60.0, 1000.0, 4000, &codecs);
        for needle in [
            "wl_webrtc_frames_captured_total 5",
            "wl_webrtc_frames_dropped_total 0",
            "wl_webrtc_viewers 2",
            "wl_webrtc_target_bitrate_kbps 4000",
            "wl_webrtc_stage_latency_seconds_count{stage=\"convert\"} 1",
            "# TYPE wl_webrtc_stage_latency_seconds histogram",
            "wl_webrtc_codec_viewers{codec=\"h264\"} 2",
            "wl_webrtc_encoder_open{codec=\"vp8\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(m.stage_summary()["convert"]["count"], 1);
    }
}
