//! The pipeline's decisions, sans-IO: events and `now` in, what to do out. [`PipelineCore`] decides for the
//! whole loop (when to ask the source for a frame, whether the next encode is an IDR and at what bitrate,
//! how to answer a keyframe request on a static screen); the capture and media threads in `app` only carry
//! its decisions out (sleep, capture, convert, encode, publish). One core per stream, shared by the two
//! threads and the viewers' tasks through `server::Hub`.
//!
//! Tested on simulated time with a synthetic source (`capture::synthetic`) and the real encoder (see `tests`), so
//! keyframe-on-PLI, bitrate steps and "nobody watching → nothing captured" need no compositor or browser.

use std::time::{Duration, Instant};

use crate::control::{BitrateController, FramePacer, KeyframeLimiter};

/// At most one IDR per this interval however many viewers join or ask.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);
/// The bitrate controller never goes below this.
pub const MIN_BITRATE_KBPS: u32 = 300;
/// A new viewer's feedback is ignored this long (its estimator starts low).
pub(crate) const FEEDBACK_GRACE: Duration = Duration::from_secs(5);

/// Something that happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// A viewer connected (its first frame must be an IDR).
    ViewerJoined {
        id: u64,
    },
    ViewerLeft {
        id: u64,
    },
    /// A viewer asked for a keyframe (PLI/FIR), or fell behind.
    KeyframeRequested,
    /// A viewer's receiver-estimated maximum bitrate (REMB), bit/s.
    Remb {
        id: u64,
        bps: f64,
    },
    /// A viewer's send-side estimate (our transport-cc feedback estimator), bit/s: where it exists it is
    /// the authority, its REMB and receiver reports are not needed.
    SendSideEstimate {
        id: u64,
        bps: f64,
    },
    /// The fraction of packets a viewer lost (after repair) over the last second or more.
    Loss {
        id: u64,
        fraction: f64,
    },
    /// The source delivered a frame that was asked for at `requested_at`.
    FrameCaptured {
        requested_at: Instant,
    },
    /// An encoded frame went out to the viewers.
    Published {
        bytes: usize,
        idr: bool,
    },
    /// The source was (re)opened: the stream must restart from an IDR.
    SourceReset,
}

/// What the capture side does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureStep {
    /// Nobody watches: capture nothing (only check now and then that the source is alive).
    Idle,
    /// The frame-rate cap: ask for the next frame at this time, not before.
    WaitUntil(Instant),
    /// Ask the source for the next frame (it answers when something changed).
    Capture,
}

/// How to encode the picture about to be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodePlan {
    pub idr: bool,
    pub bitrate_kbps: u32,
}

/// What the media side does when no new picture came: a keyframe is due on a screen that does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Send the last IDR again (nothing was encoded after it, so it is still the current picture).
    ResendLastIdr,
    /// Encode the last picture again, as an IDR.
    EncodeLastAsIdr,
}

/// The decisions of one stream; see the module docs.
#[derive(Debug)]
pub struct PipelineCore {
    viewers: usize,
    keyframes: KeyframeLimiter,
    pacer: FramePacer,
    bitrate: BitrateController,
    /// Whether the last frame published was an IDR (then a refresh can resend it).
    last_was_idr: bool,
    /// Whether anything was published since the source was (re)opened.
    published_any: bool,
    /// The last bitrate decided, and the estimate it came from (for the status page).
    target_kbps: Option<u32>,
    estimate_kbps: Option<u32>,
}

impl PipelineCore {
    /// A core for a stream capped at `fps` frames per second.
    pub fn new(fps: u32) -> PipelineCore {
        PipelineCore {
            viewers: 0,
            keyframes: KeyframeLimiter::new(KEYFRAME_INTERVAL),
            pacer: FramePacer::new(fps),
            bitrate: BitrateController::new(MIN_BITRATE_KBPS, FEEDBACK_GRACE),
            last_was_idr: false,
            published_any: false,
            target_kbps: None,
            estimate_kbps: None,
        }
    }

    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::ViewerJoined { id } => {
                self.viewers += 1;
                self.bitrate.viewer_joined(id, now);
                self.keyframes.request();
            }
            Event::ViewerLeft { id } => {
                self.viewers = self.viewers.saturating_sub(1);
                self.bitrate.viewer_left(id);
            }
            Event::KeyframeRequested => self.keyframes.request(),
            Event::Remb { id, bps } => self.bitrate.on_remb(id, bps, now),
            Event::SendSideEstimate { id, bps } => self.bitrate.on_send_side(id, bps, now),
            Event::Loss { id, fraction } => self.bitrate.on_loss(id, fraction, now),
            Event::FrameCaptured { requested_at } => self.pacer.frame_delivered(requested_at),
            Event::Published { bytes, idr } => {
                self.bitrate.on_sent(bytes, now);
                self.last_was_idr = idr;
                self.published_any = true;
            }
            Event::SourceReset => {
                self.published_any = false;
                self.keyframes.request();
            }
        }
    }

    /// Connected viewers of this stream.
    pub fn viewers(&self) -> usize {
        self.viewers
    }

    /// Capture side: what to do at `now`.
    pub fn poll_capture(&self, now: Instant) -> CaptureStep {
        if self.viewers == 0 {
            return CaptureStep::Idle;
        }
        match self.pacer.wait_time(now) {
            wait if wait.is_zero() => CaptureStep::Capture,
            wait => CaptureStep::WaitUntil(now + wait),
        }
    }

    /// Media side: a new picture is about to be encoded; `ceiling_kbps` is the configured (or automatic)
    /// bitrate for its size.
    pub fn plan_encode(&mut self, now: Instant, ceiling_kbps: u32) -> EncodePlan {
        let bitrate_kbps = self.bitrate.poll(now, ceiling_kbps);
        self.target_kbps = Some(bitrate_kbps);
        self.estimate_kbps = self.bitrate.estimate_kbps(now);
        EncodePlan { idr: self.keyframes.poll(now), bitrate_kbps }
    }

    /// Media side: no new picture came by `now` (a static screen). `Some` when a keyframe is due anyway;
    /// `have_picture`: whether an earlier picture is at hand to encode again.
    pub fn poll_refresh(&mut self, now: Instant, have_picture: bool) -> Option<Refresh> {
        let can_resend = self.published_any && self.last_was_idr;
        if !(can_resend || have_picture) {
            return None; // nothing to refresh with yet: the request waits for the first picture
        }
        if !self.keyframes.poll(now) {
            return None;
        }
        Some(if can_resend { Refresh::ResendLastIdr } else { Refresh::EncodeLastAsIdr })
    }

    /// The bitrate last decided and the viewers' estimate it was decided from (kbit/s).
    pub fn bitrate_status(&self) -> (Option<u32>, Option<u32>) {
        (self.target_kbps, self.estimate_kbps)
    }
}

#[cfg(test)]
mod tests;
